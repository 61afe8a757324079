//! Fixed-size byte newtypes shared by hashes, addresses and signatures, and their `0x`-hex
//! text form (the one JSON and the CLI use).

/// Parses `0x`-prefixed (or bare) hex into exactly `N` bytes.
pub fn parse_hex_fixed<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let bytes = parse_hex(text)?;
    let got = bytes.len();
    bytes
        .try_into()
        .map_err(|_| HexError::Length { expected: N, got })
}

/// Parses `0x`-prefixed (or bare) hex of any length.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, HexError> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    hex::decode(digits).map_err(|err| HexError::Invalid(err.to_string()))
}

/// `0x`-prefixed lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Why a hex string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("invalid hex: {0}")]
    Invalid(String),
    #[error("expected {expected} bytes of hex, got {got}")]
    Length { expected: usize, got: usize },
}

/// Declares a `[u8; N]` newtype with borsh, `0x`-hex serde, `Display`, `Debug` and `FromStr`.
macro_rules! fixed_bytes {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, borsh::BorshSerialize, borsh::BorshDeserialize)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&$crate::bytes::to_hex(&self.0))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // Short form keeps logs readable; Display gives the whole value.
                write!(f, "{}({}…)", stringify!($name), &hex::encode(&self.0[..4]))
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::bytes::HexError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $crate::bytes::parse_hex_fixed::<$len>(text).map(Self)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.to_string())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use fixed_bytes;
