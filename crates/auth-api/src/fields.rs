//! Reads a request body into the route's own form: a serde struct whose
//! members are [`Member`]s and which refuses any other member
//! (`deny_unknown_fields`). A member of the wrong JSON type is left unread
//! and named, so a `422 validation_failed` lists every offending member,
//! not just the first; an unknown member is refused as soon as it is read,
//! before anything after it is read or kept (see [`read`]). Nothing is
//! materialised but what the form holds: no `serde_json::Value` of the
//! whole body, at most [`Items`]' bound of array items.

use crate::error::ApiError;
use auth_core::domain::{FieldError, MAX_FIELD_ERRORS, Role, Roles};
use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::marker::PhantomData;
use uuid::Uuid;

/// Deepest JSON nesting accepted (the contract's limit).
pub const MAX_JSON_DEPTH: usize = 32;

/// A request body: its form as sent, and what the route reads from it.
pub trait FromJson: DeserializeOwned {
    /// Largest body accepted for this request, in bytes.
    const MAX_BODY: usize = 16 * 1024;
    /// What the route reads once every member checked out.
    type Checked;
    /// The checked request, or every offending member.
    fn check(self) -> Result<Self::Checked, Vec<FieldError>>;
}

/// One member of a request object as read: absent (or `null`), a value of
/// the expected JSON type, or something else (left unread).
#[derive(Debug, Default)]
pub enum Member<T> {
    #[default]
    Absent,
    Given(T),
    Wrong,
}

/// A type a member may hold, and the JSON it is read from; anything else
/// makes the member [`Member::Wrong`] ("must be {WHAT}").
pub trait Expect: Sized {
    const WHAT: &'static str;
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(n: u64) -> Option<Self> {
        i64::try_from(n).ok().and_then(Self::from_i64)
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl Expect for String {
    const WHAT: &'static str = "a string";
    fn from_str(s: &str) -> Option<Self> {
        Some(s.to_owned())
    }
}

impl Expect for bool {
    const WHAT: &'static str = "a boolean";
    fn from_bool(b: bool) -> Option<Self> {
        Some(b)
    }
}

/// JSON Schema's integer: any number with a zero fractional part, within
/// i64 (so `24.0` is one, as in the OpenAPI document's `type: integer`).
impl Expect for i64 {
    const WHAT: &'static str = "an integer";
    fn from_i64(n: i64) -> Option<Self> {
        Some(n)
    }
    fn from_f64(f: f64) -> Option<Self> {
        // i64::MAX as f64 rounds up to 2^63, which is out of range: exclusive bound.
        let in_range = f >= i64::MIN as f64 && f < i64::MAX as f64;
        (f.fract() == 0.0 && in_range).then_some(f as i64)
    }
}

/// An RFC 3339 date-time, such as `2026-12-02T10:00:00Z`.
impl Expect for DateTime<Utc> {
    const WHAT: &'static str = "an RFC 3339 date-time";
    fn from_str(s: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

impl Expect for Uuid {
    const WHAT: &'static str = "a UUID string";
    fn from_str(s: &str) -> Option<Self> {
        Uuid::parse_str(s).ok()
    }
}

/// An array of role words; an item that is not one makes the whole member
/// wrong (and the rest is read past, never kept).
impl Expect for Roles {
    const WHAT: &'static str = "an array of roles (worker, assigner, admin)";
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut roles = Some(Roles::none());
        while let Some(item) = seq.next_element::<Member<String>>()? {
            roles = match (roles, item) {
                (Some(roles), Member::Given(word)) => Role::parse(&word).map(|r| roles.with(r)),
                _ => None,
            };
        }
        Ok(roles)
    }
}

/// A nested object read into its own form `F` (which refuses unknown
/// members too).
#[derive(Debug)]
pub struct Object<F>(pub F);

impl<F: DeserializeOwned> Expect for Object<F> {
    const WHAT: &'static str = "a JSON object";
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        F::deserialize(de::value::MapAccessDeserializer::new(map)).map(|f| Some(Object(f)))
    }
}

/// An array whose first `MAX` + 1 items are kept (one more than a route
/// accepts, enough to say there are too many); the rest are read past,
/// never kept.
#[derive(Debug)]
pub struct Items<T, const MAX: usize> {
    pub items: Vec<Member<T>>,
    /// Items past the kept ones.
    pub more: usize,
}

impl<T: Expect, const MAX: usize> Expect for Items<T, MAX> {
    const WHAT: &'static str = "an array";
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut items = Vec::new();
        while items.len() <= MAX {
            match seq.next_element::<Member<T>>()? {
                Some(item) => items.push(item),
                None => return Ok(Some(Items { items, more: 0 })),
            }
        }
        let mut more = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            more += 1;
        }
        Ok(Some(Items { items, more }))
    }
}

impl<T, const MAX: usize> Items<T, MAX> {
    /// How many items the array had.
    pub fn count(&self) -> usize {
        self.items.len() + self.more
    }
}

impl<'de, T: Expect> Deserialize<'de> for Member<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MemberVisitor(PhantomData))
    }
}

struct MemberVisitor<T>(PhantomData<T>);

fn given<T>(value: Option<T>) -> Member<T> {
    value.map_or(Member::Wrong, Member::Given)
}

impl<'de, T: Expect> Visitor<'de> for MemberVisitor<T> {
    type Value = Member<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::WHAT)
    }
    fn visit_unit<E>(self) -> Result<Member<T>, E> {
        Ok(Member::Absent)
    }
    fn visit_none<E>(self) -> Result<Member<T>, E> {
        Ok(Member::Absent)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Member<T>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Member<T>, E> {
        Ok(given(T::from_bool(b)))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Member<T>, E> {
        Ok(given(T::from_i64(n)))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Member<T>, E> {
        Ok(given(T::from_u64(n)))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Member<T>, E> {
        Ok(given(T::from_f64(f)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Member<T>, E> {
        Ok(given(T::from_str(s)))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Member<T>, A::Error> {
        T::from_map(map).map(given)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Member<T>, A::Error> {
        T::from_seq(seq).map(given)
    }
}

/// What a read of (part of) a body came to.
pub enum Read<T> {
    /// The whole body, checked.
    Done(T),
    /// The bytes so far decide nothing yet.
    NeedMore,
}

/// Reads `bytes` as the body of `F`; `complete` when they are all of it.
/// A prefix decides only when it holds an unknown or repeated member (422,
/// found as it is read, so a body padded with an unknown member is refused
/// before the rest of it arrives); anything else, broken JSON included,
/// waits for the whole body (a number cut at a prefix's end can read as out
/// of range when the whole one is fine).
pub fn read<F: FromJson>(bytes: &[u8], complete: bool) -> Result<Read<F::Checked>, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let form = match serde_path_to_error::deserialize::<_, Member<Object<F>>>(&mut de) {
        Ok(form) => form,
        Err(e) => {
            let path = e.path().to_string();
            let e = e.into_inner();
            return match e.classify() {
                serde_json::error::Category::Data => Err(not_a_member(&path, &e)),
                _ if !complete => Ok(Read::NeedMore),
                _ => Err(ApiError::MalformedRequest("the body is not valid JSON")),
            };
        }
    };
    if !complete {
        // A whole value already; whatever follows must be whitespace.
        return Ok(Read::NeedMore);
    }
    de.end()
        .map_err(|_| ApiError::MalformedRequest("the body is not valid JSON"))?;
    match form {
        Member::Given(Object(form)) => form.check().map(Read::Done),
        Member::Absent | Member::Wrong => {
            Err(vec![FieldError::new("body", "must be a JSON object")])
        }
    }
    .map_err(ApiError::Validation)
}

/// The only data errors a form raises: a member it does not have (the
/// path names it), or one given twice (the path names the object; serde's
/// message, "duplicate field `name`", names the member).
fn not_a_member(path: &str, e: &serde_json::Error) -> ApiError {
    let message = e.to_string();
    let repeated = message
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    let (field, detail) = match repeated {
        Some(name) => match path {
            "." => (name.to_owned(), "is given more than once"),
            object => (format!("{object}.{name}"), "is given more than once"),
        },
        None => (path.to_owned(), "is not a member of this request"),
    };
    ApiError::Validation(vec![FieldError::new(shortened(field), detail)])
}

/// A member's path as a 422 names it: a name the client sent is echoed, so
/// at most [`NAMED_CHARS`] characters of it.
fn shortened(mut path: String) -> String {
    if let Some((at, _)) = path.char_indices().nth(NAMED_CHARS) {
        path.truncate(at);
        path.push('…');
    }
    path
}

/// The longest path of an offending member a 422 echoes.
const NAMED_CHARS: usize = 200;

/// Counts how deep a body nests as its bytes arrive, without parsing it:
/// a body past [`MAX_JSON_DEPTH`] is refused at the byte that goes past.
#[derive(Debug, Default)]
pub struct Nesting {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Nesting {
    /// Takes the next bytes; `Err` once the nesting passes the limit.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ApiError> {
        for &b in bytes {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    self.depth += 1;
                    if self.depth > MAX_JSON_DEPTH {
                        return Err(ApiError::MalformedRequest(
                            "the body nests deeper than 32 levels",
                        ));
                    }
                }
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Collects every offending member of a form, under a path prefix
/// (`tasks[3]`), keeping at most one error past what a 422 lists.
pub struct Fields {
    prefix: String,
    pub errors: Vec<FieldError>,
}

impl Fields {
    /// Members at the top of the body.
    pub fn top() -> Fields {
        Fields::under("")
    }

    /// Members of the object at `prefix`.
    pub fn under(prefix: &str) -> Fields {
        Fields {
            prefix: prefix.to_owned(),
            errors: Vec::new(),
        }
    }

    /// `name` under the prefix; `""` names the object at the prefix itself.
    fn path(&self, name: &str) -> String {
        match (self.prefix.is_empty(), name.is_empty()) {
            (true, _) => name.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{name}", self.prefix),
        }
    }

    /// Keeps at most one error past what a 422 lists: enough to say
    /// `truncated`, never one per item of a hostile body.
    pub fn push(&mut self, error: FieldError) {
        if !self.is_full() {
            self.errors.push(error);
        }
    }

    /// A problem with member `name` itself.
    pub fn fail(&mut self, name: &str, detail: &str) {
        let path = self.path(name);
        self.push(FieldError::new(path, detail));
    }

    /// Whether more errors than a 422 lists were found: stop reading.
    pub fn is_full(&self) -> bool {
        self.errors.len() > MAX_FIELD_ERRORS
    }

    /// Takes over the errors of a nested reader (an item of an array).
    pub fn absorb(&mut self, nested: Fields) {
        for error in nested.errors {
            self.push(error);
        }
    }

    /// A member that must be given.
    pub fn required<T: Expect>(&mut self, name: &str, member: Member<T>) -> Option<T> {
        match member {
            Member::Given(value) => Some(value),
            Member::Absent => {
                self.fail(name, "is required");
                None
            }
            Member::Wrong => {
                self.fail(name, &format!("must be {}", T::WHAT));
                None
            }
        }
    }

    /// A member that may be left out (`None`, also when wrong: it is listed).
    pub fn optional<T: Expect>(&mut self, name: &str, member: Member<T>) -> Option<T> {
        match member {
            Member::Given(value) => Some(value),
            Member::Absent => None,
            Member::Wrong => {
                self.fail(name, &format!("must be {}", T::WHAT));
                None
            }
        }
    }

    /// `Ok(value)` when no member failed.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(self.errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Expect, Fields, Items, Member, Nesting, Object, Read, read};
    use crate::error::ApiError;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        name: Member<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Form {
        #[serde(default)]
        n: Member<i64>,
        #[serde(default)]
        items: Member<Items<Object<Inner>, 3>>,
    }

    impl super::FromJson for Form {
        type Checked = (i64, Vec<String>);
        fn check(self) -> Result<Self::Checked, Vec<auth_core::domain::FieldError>> {
            let mut f = Fields::top();
            let n = f.required("n", self.n);
            let mut names = Vec::new();
            for (i, item) in f
                .optional("items", self.items)
                .map(|items| items.items)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                let mut g = Fields::under(&format!("items[{i}]"));
                if let Some(Object(inner)) = g.required("", item) {
                    names.extend(g.optional("name", inner.name));
                }
                f.absorb(g);
            }
            f.finish(n.map(|n| (n, names)))
        }
    }

    fn fields(e: ApiError) -> Vec<(String, String)> {
        match e {
            ApiError::Validation(errors) => {
                errors.into_iter().map(|e| (e.field, e.detail)).collect()
            }
            other => panic!("not a 422: {other:?}"),
        }
    }

    #[test]
    fn integral_numbers_are_integers_and_others_are_not() {
        assert_eq!(i64::from_f64(24.0), Some(24));
        assert_eq!(i64::from_f64(-3.0), Some(-3));
        assert_eq!(i64::from_f64(1e2), Some(100));
        assert_eq!(i64::from_f64(7.5), None);
        assert_eq!(i64::from_f64(1e300), None);
        assert_eq!(i64::from_f64(9.223372036854776e18), None);
        assert_eq!(i64::from_u64(u64::MAX), None);
        assert_eq!(i64::from_str("24"), None);
    }

    #[test]
    fn every_wrong_member_is_listed_and_the_wrong_values_are_left_unread() {
        let e = read::<Form>(br#"{"n": "7", "items": [{"name": 1}, 5]}"#, true)
            .err()
            .unwrap();
        assert_eq!(
            fields(e),
            [
                ("n".into(), "must be an integer".into()),
                ("items[0].name".into(), "must be a string".into()),
                ("items[1]".into(), "must be a JSON object".into()),
            ]
        );
        match read::<Form>(br#"{"n": 7.0, "items": [{"name": "a"}, {}]}"#, true) {
            Ok(Read::Done((7, names))) => assert_eq!(names, ["a"]),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn an_unknown_member_is_refused_by_its_path_as_soon_as_it_is_read() {
        let e = read::<Form>(br#"{"n": 1, "pad": [0, 0, 0"#, false)
            .err()
            .expect("refused on a prefix");
        assert_eq!(
            fields(e),
            [("pad".into(), "is not a member of this request".into())]
        );
        let e = read::<Form>(
            br#"{"items": [{"name": "a"}, {"name": "b", "x": 1}]}"#,
            true,
        )
        .err()
        .unwrap();
        assert_eq!(
            fields(e),
            [(
                "items[1].x".into(),
                "is not a member of this request".into()
            )]
        );
        let key = "k".repeat(5000);
        let e = read::<Form>(format!(r#"{{"{key}": 1}}"#).as_bytes(), false)
            .err()
            .unwrap();
        let named = &fields(e)[0].0;
        assert_eq!(
            named.chars().count(),
            super::NAMED_CHARS + 1,
            "shortened: {named}"
        );
        let e = read::<Form>(br#"{"n": 1, "n": 2}"#, true).err().unwrap();
        assert_eq!(fields(e), [("n".into(), "is given more than once".into())]);
        let e = read::<Form>(br#"{"items": [{"name": "a", "name": "b"}]}"#, true)
            .err()
            .unwrap();
        assert_eq!(
            fields(e),
            [("items[0].name".into(), "is given more than once".into())]
        );
    }

    #[test]
    fn a_prefix_waits_for_more_and_the_whole_body_decides() {
        for prefix in [
            &b"{"[..],
            b"{\"n\"",
            b"{\"n\": 1",
            b"{\"n\": 1.",
            b"{\"n\": 1} ",
        ] {
            assert!(
                matches!(read::<Form>(prefix, false), Ok(Read::NeedMore)),
                "{prefix:?}"
            );
        }
        for broken in [&b"{\"n\" 1}"[..], b"[1,]", b"{\"n\": 1} x"] {
            assert!(
                matches!(
                    read::<Form>(broken, true),
                    Err(ApiError::MalformedRequest(_))
                ),
                "{broken:?}"
            );
        }
        // A prefix never decides on syntax: a number cut at its end may read
        // as out of range, and the whole body decides.
        assert!(matches!(
            read::<Form>(b"{\"n\" 1", false),
            Ok(Read::NeedMore)
        ));
        let long = format!("{{\"n\": 1{}", "0".repeat(400));
        assert!(matches!(
            read::<Form>(long.as_bytes(), false),
            Ok(Read::NeedMore)
        ));
        let whole = format!("{{\"n\": 1{}e-400}}", "0".repeat(400));
        assert!(matches!(
            read::<Form>(whole.as_bytes(), true),
            Ok(Read::Done((1, _)))
        ));
        for not_object in [&b"[]"[..], b"null", b"\"n\"", b"1"] {
            let e = read::<Form>(not_object, true).err().unwrap();
            assert_eq!(fields(e), [("body".into(), "must be a JSON object".into())]);
        }
    }

    #[test]
    fn an_array_keeps_one_item_past_its_bound_and_counts_the_rest() {
        let body = format!(r#"{{"n": 1, "items": [{}]}}"#, ["{}"; 10].join(","));
        let form: Form = serde_json::from_str(&body).unwrap();
        let Member::Given(items) = form.items else {
            panic!("items")
        };
        assert_eq!((items.items.len(), items.count()), (4, 10));
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let mut n = Nesting::default();
        assert!(
            n.feed(br#"{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"[[["}"#)
                .is_ok()
        );
        let deep = "[".repeat(32) + &"]".repeat(32);
        assert!(Nesting::default().feed(deep.as_bytes()).is_ok());
        let mut split = Nesting::default();
        assert!(split.feed(&deep.as_bytes()[..20]).is_ok());
        assert!(split.feed(&deep.as_bytes()[20..]).is_ok());
        assert!(Nesting::default().feed("[".repeat(33).as_bytes()).is_err());
    }

    #[test]
    fn a_reader_keeps_one_error_past_the_listed_fifty() {
        let mut f = Fields::top();
        for i in 0..500 {
            f.required::<String>(&format!("f{i}"), Member::Absent);
        }
        assert!(f.is_full());
        assert_eq!(f.errors.len(), super::MAX_FIELD_ERRORS + 1);
    }
}
