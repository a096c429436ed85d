//! The keys the simulated CA hands out when it makes the key itself: a small pool
//! per algorithm, each key made once (outside the world's lock) and then reused, so
//! that an account of 10,000 RSA orders costs 8 RSA key generations, not 10,000.

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
        // The pool's own lock is held while a key is made, so that requests arriving
        // together (a pass works on 64 certificates at once) wait for the pool to
        // fill instead of each making a key: the pool costs POOL_SIZE generations
        // in all. Callers are outside the world's lock (see the server).
        let mut keys = self.slot(rsa).lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= POOL_SIZE
            && let Some(k) = (0..keys.len())
                .map(|_| &keys[self.next.fetch_add(1, Ordering::Relaxed) % keys.len()])
                .find(|k| avoid != Some(&*k.pem))
        {
            return Ok(k.clone());
        }
        let key = if rsa {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
        } else {
            KeyPair::generate()?
        };
        let made = PooledKey {
            pem: encode(&key)?.into(),
            key: Arc::new(key),
        };
        if keys.len() < POOL_SIZE {
            keys.push(made.clone());
        }
        Ok(made)
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
        // Requests arriving together make no more keys than the pool holds.
        let fresh = KeyPool::default();
        let made: std::collections::HashSet<_> = std::thread::scope(|s| {
            let takers: Vec<_> = (0..4 * POOL_SIZE)
                .map(|_| {
                    s.spawn(|| {
                        // As slow as an RSA key, so the takers overlap.
                        let slow = |k: &KeyPair| {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                            pem(k)
                        };
                        fresh.take(false, None, slow).expect("key").pem
                    })
                })
                .collect();
            takers
                .into_iter()
                .map(|t| t.join().expect("taker"))
                .collect()
        });
        assert_eq!(made.len(), POOL_SIZE, "{} keys made", made.len());
        for _ in 0..3 * POOL_SIZE {
            let k = pool.take(false, Some(&first), pem).expect("key");
            assert_ne!(k.pem, first);
        }
    }
}
