//! A minimal DER walker: just enough to split a certificate into its signed part,
//! signature algorithm and signature, and a PKCS#8 key into its parts. Whatever it
//! finds is then checked by aws-lc-rs or rustls-webpki, which parse strictly.

/// One tag-length-value element.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    /// Tag, length and content: the element as it was encoded.
    pub whole: &'a [u8],
    pub content: &'a [u8],
}

pub(crate) const SEQUENCE: u8 = 0x30;
#[cfg(test)]
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const BIT_STRING: u8 = 0x03;
#[cfg(test)]
pub(crate) const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT`, as the version of a TBSCertificate.
pub(crate) const CONTEXT_0: u8 = 0xa0;

/// Reads the element at the front of `input`; returns it and what follows. `None`
/// when the input is truncated or uses a form DER does not allow (indefinite
/// length, lengths over 4 bytes, multi-byte tags).
pub(crate) fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((
        Tlv {
            tag,
            whole: &input[..header + len],
            content: &rest[..len],
        },
        &rest[len..],
    ))
}

/// Reads an element that must carry `tag`.
pub(crate) fn expect(input: &[u8], tag: u8) -> Option<(Tlv<'_>, &[u8])> {
    read(input).filter(|(t, _)| t.tag == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths_and_refuses_truncation() {
        let short = [OCTET_STRING, 3, b'a', b'b', b'c'];
        let (t, rest) = read(&short).expect("short");
        assert_eq!(
            (t.tag, t.content, rest.len()),
            (OCTET_STRING, &b"abc"[..], 0)
        );
        let mut long = vec![SEQUENCE, 0x82, 0x01, 0x2c];
        long.extend([7u8; 300]);
        long.push(0xff);
        let (t, rest) = read(&long).expect("long");
        assert_eq!(t.content.len(), 300);
        assert_eq!(t.whole.len(), 304);
        assert_eq!(rest, [0xff]);
        assert!(read(&long[..100]).is_none(), "truncated");
        assert!(read(&[0x30, 0x80, 0, 0]).is_none(), "indefinite length");
        assert!(read(&[0x1f, 0x01, 0]).is_none(), "multi-byte tag");
        assert!(expect(&short, SEQUENCE).is_none(), "wrong tag");
    }
}
