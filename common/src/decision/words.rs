//! `words!`: a fieldless enum whose values have stable text names (logs, records, case files,
//! evidence), with `ALL`, `name`, `parse` and `Display`. The vocabularies of [`super::proto`]
//! and [`super::evidence`] are made with it; extra derives (serde, for the messages) go with the
//! enum's own attributes.

macro_rules! words {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident => $word:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $var),+ }
        impl $name {
            /// All values.
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// The text form (logs, records, case files).
            pub fn name(self) -> &'static str { match self { $($name::$var => $word),+ } }
            /// From the text form.
            pub fn parse(s: &str) -> Option<$name> { match s { $($word => Some($name::$var),)+ _ => None } }
        }
        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result { f.write_str(self.name()) }
        }
    };
}
