//! Reads a JSON object field by field, collecting every offending field so a
//! `422 validation_failed` lists them all, not just the first.

use auth_core::domain::FieldError;
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
            fields
                .errors
                .push(FieldError::new(name, "must be a JSON object"));
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
        self.errors.push(FieldError::new(path, detail));
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

    pub fn integer(&mut self, name: &str) -> Option<i64> {
        self.required(name, "an integer", Value::as_i64)
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
