//! The keys the simulated CA hands out when it makes the key itself: a small pool
//! per algorithm, each key made once outside any lock and then reused, so that an
//! account of 10,000 RSA orders costs a few RSA key generations, not 10,000.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::KeyPair;

/// How many distinct keys each algorithm gets before keys are reused. More than
/// one, so a renewal can always get a key other than its order's current one.
pub const POOL_SIZE: usize = 8;

/// One pooled key and its PEM text in the CA's key format.
#[derive(Debug, Clone)]
pub struct PooledKey {
    pub key: Arc<KeyPair>,
    pub pem: Arc<str>,
}

/// Up to [`POOL_SIZE`] keys per algorithm (RSA-2048 and ECDSA P-256).
#[derive(Debug, Default)]
pub struct KeyPool {
    rsa: Mutex<Vec<PooledKey>>,
    ec: Mutex<Vec<PooledKey>>,
    next: AtomicUsize,
}

impl KeyPool {
    fn slot(&self, rsa: bool) -> &Mutex<Vec<PooledKey>> {
        if rsa { &self.rsa } else { &self.ec }
    }

    /// A key of the algorithm (`rsa` or ECDSA P-256) whose PEM is not `avoid`:
    /// a new one while the pool is not full, else one of the pool's in turn.
    /// `encode` turns a new key into its PEM text.
    pub fn take(
        &self,
        rsa: bool,
        avoid: Option<&str>,
        encode: impl FnOnce(&KeyPair) -> Result<String, super::CaError>,
    ) -> Result<PooledKey, super::CaError> {
        if let Some(k) = self.reuse(rsa, avoid) {
            return Ok(k);
        }
        // Made without holding the pool's lock: other requests keep being served
        // from the pool (or make their own key) meanwhile.
        let key = if rsa {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
        } else {
            KeyPair::generate()?
        };
        let pem: Arc<str> = encode(&key)?.into();
        let made = PooledKey {
            key: Arc::new(key),
            pem,
        };
        let mut keys = self.slot(rsa).lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() < POOL_SIZE {
            keys.push(made.clone());
        }
        Ok(made)
    }

    /// One of a full pool's keys other than `avoid`, in turn.
    fn reuse(&self, rsa: bool, avoid: Option<&str>) -> Option<PooledKey> {
        let keys = self.slot(rsa).lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() < POOL_SIZE {
            return None;
        }
        (0..keys.len())
            .map(|_| &keys[self.next.fetch_add(1, Ordering::Relaxed) % keys.len()])
            .find(|k| avoid != Some(&*k.pem))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(k: &KeyPair) -> Result<String, crate::ca::CaError> {
        Ok(k.serialize_pem())
    }

    #[test]
    fn fills_to_its_size_then_reuses_and_never_hands_out_the_avoided_key() {
        let pool = KeyPool::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..POOL_SIZE {
            seen.insert(pool.take(false, None, pem).expect("key").pem);
        }
        assert_eq!(
            seen.len(),
            POOL_SIZE,
            "distinct keys until the pool is full"
        );
        let first = pool.take(false, None, pem).expect("key").pem;
        assert!(seen.contains(&first), "a full pool reuses its keys");
        for _ in 0..3 * POOL_SIZE {
            let k = pool.take(false, Some(&first), pem).expect("key");
            assert_ne!(k.pem, first);
        }
    }
}
