//! Alibaba's loose JSON scalars: numbers that may arrive as JSON numbers or
//! numeric strings (older docs show both), ids that are strings here and integers
//! elsewhere, and `""` sent for a value the service does not have.

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// Accepts `123`, `"123"`, `null` or an absent field.
pub(super) fn de_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrString {
        Num(i64),
        Float(f64),
        Str(String),
    }
    match Option::<NumOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrString::Num(n)) => Ok(Some(n)),
        Some(NumOrString::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
        Some(NumOrString::Float(f)) => Err(de::Error::custom(format!("{f} is not an integer"))),
        Some(NumOrString::Str(s)) => int_from_str(&s),
    }
}

/// A number sent as a string: blank is absent, anything else must be an integer.
pub(crate) fn int_from_str<E: de::Error>(s: &str) -> Result<Option<i64>, E> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim()
        .parse()
        .map(Some)
        .map_err(|_| E::custom(format!("{s:?} is not an integer")))
}

/// Like [`de_opt_i64`] but the field must be there.
pub(super) fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    de_opt_i64(d)?.ok_or_else(|| de::Error::custom("missing number"))
}

/// Accepts a string or a number (CertId is a string here and an integer elsewhere);
/// `""` is absent.
pub(super) fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StrOrNum {
        Str(String),
        Num(i64),
    }
    Ok(match Option::<StrOrNum>::deserialize(d)? {
        None => None,
        Some(StrOrNum::Str(s)) if s.trim().is_empty() => None,
        Some(StrOrNum::Str(s)) => Some(s),
        Some(StrOrNum::Num(n)) => Some(n.to_string()),
    })
}

/// Any optional scalar field (string, [`Secret`], bool, enum): Alibaba sends `""`
/// for a value it does not have (`"PrivateKey": ""`, `"Domain": ""`), so `""`, a
/// blank string, `null` and an absent field all read as `None`. Numbers go through
/// [`de_opt_i64`], which does the same.
pub(crate) fn de_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    use serde::de::IntoDeserializer;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
    }
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(None),
        Some(Scalar::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(Scalar::Str(s)) => T::deserialize(s.into_deserializer()).map(Some),
        Some(Scalar::Bool(b)) => T::deserialize(b.into_deserializer()).map(Some),
        Some(Scalar::Int(n)) => T::deserialize(n.into_deserializer()).map(Some),
        Some(Scalar::Float(f)) => T::deserialize(f.into_deserializer()).map(Some),
    }
}

/// A list that Alibaba may send as `[...]`, `null`, `""` or not at all (the last
/// three are empty). A non-empty string or an element of the wrong shape is an
/// error that says which.
pub(super) fn de_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(v @ serde_json::Value::Array(_)) => {
            serde_json::from_value(v).map_err(|e| de::Error::custom(format!("a list entry: {e}")))
        }
        Some(other) => Err(de::Error::custom(format!("{other} is not a list"))),
    }
}

/// An integer that may arrive as a number or a numeric string, inside a list.
struct LooseInt(i64);

impl<'de> Deserialize<'de> for LooseInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_i64(d).map(LooseInt)
    }
}

/// A list of integers (ContactIdList), each a number or a numeric string; as
/// [`de_list`] for the list itself.
pub(super) fn de_int_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    let v: Vec<LooseInt> = de_list(d)?;
    Ok(v.into_iter().map(|LooseInt(n)| n).collect())
}
