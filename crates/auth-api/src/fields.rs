//! Reads a JSON object field by field, collecting every offending field so a
//! `422 validation_failed` lists them all, not just the first.

use auth_core::domain::{FieldError, MAX_FIELD_ERRORS};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A request body that can be read from any JSON value.
pub trait FromJson: Sized {
    /// Largest body accepted for this request, in bytes.
    const MAX_BODY: usize = 16 * 1024;
    fn from_json(value: &Value) -> Result<Self, Vec<FieldError>>;
}

pub struct Fields<'a> {
    prefix: String,
    object: Option<&'a Map<String, Value>>,
    pub errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    /// Starts reading `value`, which must be an object.
    pub fn of(value: &'a Value, prefix: &str) -> Fields<'a> {
        let mut fields = Fields {
            prefix: prefix.to_string(),
            object: value.as_object(),
            errors: Vec::new(),
        };
        if fields.object.is_none() {
            let name = if prefix.is_empty() {
                "body".to_string()
            } else {
                prefix.to_string()
            };
            fields.push(FieldError::new(name, "must be a JSON object"));
        }
        fields
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.object
            .and_then(|o| o.get(name))
            .filter(|v| !v.is_null())
    }

    fn fail(&mut self, name: &str, detail: &str) {
        let path = self.path(name);
        self.push(FieldError::new(path, detail));
    }

    /// Keeps at most one error past what a 422 lists: enough to say
    /// `truncated`, never one per item of a hostile body.
    pub fn push(&mut self, error: FieldError) {
        if !self.is_full() {
            self.errors.push(error);
        }
    }

    /// Whether more errors than a 422 lists were found: stop reading.
    pub fn is_full(&self) -> bool {
        self.errors.len() > MAX_FIELD_ERRORS
    }

    /// Takes over the errors of a nested reader (an item of an array).
    pub fn absorb(&mut self, nested: Fields<'_>) {
        for error in nested.errors {
            self.push(error);
        }
    }

    fn required<T>(
        &mut self,
        name: &str,
        kind: &str,
        read: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        self.object?;
        match self.get(name) {
            None => {
                self.fail(name, "is required");
                None
            }
            Some(v) => {
                let out = read(v);
                if out.is_none() {
                    self.fail(name, &format!("must be {kind}"));
                }
                out
            }
        }
    }

    pub fn string(&mut self, name: &str) -> Option<&'a str> {
        self.required(name, "a string", Value::as_str)
    }

    /// An integer; an integral number such as `24.0` counts, as it does in
    /// JSON Schema (the OpenAPI document's `type: integer`). `7.5` does not.
    pub fn integer(&mut self, name: &str) -> Option<i64> {
        self.required(name, "an integer", as_integer)
    }

    pub fn array(&mut self, name: &str) -> Option<&'a Vec<Value>> {
        self.required(name, "an array", Value::as_array)
    }

    pub fn optional_bool(&mut self, name: &str, default: bool) -> bool {
        match self.get(name) {
            None => default,
            Some(v) => v.as_bool().unwrap_or_else(|| {
                self.fail(name, "must be a boolean");
                default
            }),
        }
    }

    pub fn optional_integer(&mut self, name: &str) -> Option<i64> {
        let v = self.get(name)?;
        let n = as_integer(v);
        if n.is_none() {
            self.fail(name, "must be an integer");
        }
        n
    }

    pub fn optional_string(&mut self, name: &str) -> Option<&'a str> {
        let v = self.get(name)?;
        let text = v.as_str();
        if text.is_none() {
            self.fail(name, "must be a string");
        }
        text
    }

    /// An RFC 3339 date-time, such as `2026-12-02T10:00:00Z`.
    pub fn optional_time(&mut self, name: &str) -> Option<DateTime<Utc>> {
        let v = self.get(name)?;
        let time = v
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        if time.is_none() {
            self.fail(name, "must be an RFC 3339 date-time");
        }
        time
    }

    pub fn optional_uuid(&mut self, name: &str) -> Option<Uuid> {
        let v = self.get(name)?;
        let id = v.as_str().and_then(|s| Uuid::parse_str(s).ok());
        if id.is_none() {
            self.fail(name, "must be a UUID string");
        }
        id
    }

    /// `Ok(value)` when no field failed.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(self.errors),
        }
    }
}

/// JSON Schema's integer: any number with a zero fractional part, within i64.
fn as_integer(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // i64::MAX as f64 rounds up to 2^63, which is out of range: exclusive bound.
    let in_range = f >= i64::MIN as f64 && f < i64::MAX as f64;
    (f.fract() == 0.0 && in_range).then_some(f as i64)
}

#[cfg(test)]
mod tests {
    use super::{Fields, as_integer};
    use serde_json::json;

    #[test]
    fn integral_numbers_are_integers_and_others_are_not() {
        assert_eq!(as_integer(&json!(24)), Some(24));
        assert_eq!(as_integer(&json!(24.0)), Some(24));
        assert_eq!(as_integer(&json!(-3.0)), Some(-3));
        assert_eq!(as_integer(&json!(1e2)), Some(100));
        assert_eq!(as_integer(&json!(7.5)), None);
        assert_eq!(as_integer(&json!(1e300)), None);
        assert_eq!(as_integer(&json!(9.223372036854776e18)), None);
        assert_eq!(as_integer(&json!("24")), None);
    }

    #[test]
    fn a_reader_keeps_one_error_past_the_listed_fifty() {
        let body = json!({});
        let mut f = Fields::of(&body, "");
        for i in 0..500 {
            f.string(&format!("f{i}"));
        }
        assert!(f.is_full());
        assert_eq!(f.errors.len(), super::MAX_FIELD_ERRORS + 1);
    }
}
