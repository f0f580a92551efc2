//! Who may do what. A user holds a set of [`Role`]s (stored in the
//! database's own type `user_role`, migration 10); every route asks for one
//! [`Right`], and [`Right::granted_by`] is the one table that says which
//! roles grant it.

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::pg::{Pg, PgValue};
use diesel::sql_types::{Array, Text};
use serde::{Serialize, Serializer};

/// A role a user (and an API key) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Worker,
    Assigner,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Worker, Role::Assigner, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Assigner => "assigner",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// What a request needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Claim for itself; heartbeat, fail, release and complete what it
    /// holds; read what it holds.
    Work,
    /// Create, cancel, claim for another user, read and count every task.
    Assign,
    /// Manage users.
    Administer,
}

impl Right {
    pub const ALL: [Right; 3] = [Right::Work, Right::Assign, Right::Administer];

    /// The roles that grant this right: each role grants what the one
    /// before it does, and more.
    pub fn granted_by(self) -> &'static [Role] {
        match self {
            Right::Work => &[Role::Worker, Role::Assigner, Role::Admin],
            Right::Assign => &[Role::Assigner, Role::Admin],
            Right::Administer => &[Role::Admin],
        }
    }
}

/// A set of roles, in [`Role::ALL`]'s order whatever order it was given in.
/// Read from the database as its words (`roles::text[]`) and bound as them
/// ([`Roles::words`], cast to `user_role[]` by the statement).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, FromSqlRow)]
pub struct Roles(u8);

impl Roles {
    pub fn none() -> Roles {
        Roles(0)
    }

    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn grant(self, right: Right) -> bool {
        right.granted_by().iter().any(|&role| self.contains(role))
    }

    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |&r| self.contains(r))
    }

    /// The roles' words, as the database and the API spell them.
    pub fn words(self) -> Vec<&'static str> {
        self.iter().map(Role::as_str).collect()
    }

    /// Roles from their words; the first word that names no role is the error.
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Roles, String> {
        words.into_iter().try_fold(Roles::none(), |roles, word| {
            Role::parse(word.trim())
                .map(|role| roles.with(role))
                .ok_or_else(|| format!("`{word}` is not a role (worker, assigner or admin)"))
        })
    }

    pub fn with(self, role: Role) -> Roles {
        Roles(self.0 | role.bit())
    }

    /// These roles and every role whose rights they grant already (an
    /// `admin` may do what a `worker` may): what an owner may give its
    /// API keys.
    pub fn implied(self) -> Roles {
        Role::ALL
            .into_iter()
            .filter(|&role| {
                Right::ALL
                    .into_iter()
                    .filter(|right| right.granted_by().contains(&role))
                    .all(|right| self.grant(right))
            })
            .collect()
    }

    /// Whether an owner holding `owner` may give a key these roles: each
    /// is among what the owner's roles cover.
    pub fn within(self, owner: Roles) -> bool {
        self.0 & owner.implied().0 == self.0
    }
}

impl FromSql<Array<Text>, Pg> for Roles {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        let words: Vec<String> = FromSql::<Array<Text>, Pg>::from_sql(value)?;
        Ok(Roles::parse(words.iter().map(String::as_str))?)
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(roles: I) -> Roles {
        roles.into_iter().fold(Roles::none(), Roles::with)
    }
}

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.words()).finish()
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.words().join(","))
    }
}

impl std::str::FromStr for Roles {
    type Err = String;

    /// Comma-separated words; an empty text is no role.
    fn from_str(text: &str) -> Result<Roles, String> {
        Roles::parse(text.split(',').filter(|w| !w.trim().is_empty()))
    }
}

impl Serialize for Roles {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.words())
    }
}

#[cfg(test)]
mod tests {
    use super::{Right, Role, Roles};

    #[test]
    fn an_owner_may_give_a_key_any_role_its_own_roles_cover() {
        let admin = Roles::none().with(Role::Admin);
        let assigner = Roles::none().with(Role::Assigner);
        let worker = Roles::none().with(Role::Worker);
        assert_eq!(admin.implied(), Role::ALL.into_iter().collect());
        assert_eq!(assigner.implied(), assigner.with(Role::Worker));
        assert_eq!(worker.implied(), worker);
        assert!(worker.within(admin) && worker.within(assigner));
        assert!(!assigner.within(worker) && !admin.within(assigner));
        assert!(Roles::none().within(Roles::none()));
        assert_eq!(Roles::none().implied(), Roles::none());
    }

    #[test]
    fn every_role_reads_back_from_its_word() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("Admin"), None);
    }

    #[test]
    fn each_role_grants_what_the_one_before_it_does_and_more() {
        let only = |role| Roles::none().with(role);
        assert!(only(Role::Worker).grant(Right::Work));
        assert!(!only(Role::Worker).grant(Right::Assign));
        assert!(only(Role::Assigner).grant(Right::Work));
        assert!(only(Role::Assigner).grant(Right::Assign));
        assert!(!only(Role::Assigner).grant(Right::Administer));
        assert!(only(Role::Admin).grant(Right::Administer));
        assert!(only(Role::Admin).grant(Right::Work));
        assert!(!Roles::none().grant(Right::Work));
    }

    #[test]
    fn roles_are_a_set_in_one_order() -> Result<(), String> {
        let roles: Roles = "admin, worker,admin".parse()?;
        assert_eq!(roles.words(), ["worker", "admin"]);
        assert_eq!(roles.to_string(), "worker,admin");
        assert_eq!("".parse::<Roles>()?, Roles::none());
        assert!("worker,root".parse::<Roles>().is_err());
        Ok(())
    }
}
