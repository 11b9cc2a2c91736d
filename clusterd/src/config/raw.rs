//! The literal shape of ha.yaml as serde reads it, before validation.
//!
//! Every struct denies unknown fields, so a typo is reported by serde with its line and column. Every
//! value that has a unit or a keyword is read as a [`Scalar`] (any YAML scalar, kept as text) and
//! converted later, so those errors are worded by us and name the field path.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;

pub(crate) use super::raw_sections::{
    RawChapUser, RawCluster, RawGroup, RawGuard, RawIscsi, RawLink, RawLun, RawMetrics, RawTarget,
    RawTargetParams, RawVip,
};

/// Top level. The sections after `resources` are in `raw_sections.rs`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `nodes` and `resources`"
)]
pub(crate) struct RawHaConfig {
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub resources: UniqueMap<RawResource>,
    pub cluster: Option<RawCluster>,
    pub group: Option<RawGroup>,
    /// issue 17: several failover groups, by name (not together with `group`).
    pub groups: Option<OrderedUniqueMap<RawGroup>>,
    #[serde(default)]
    pub iscsi: RawIscsi,
    #[serde(default)]
    pub targets: OrderedUniqueMap<RawTarget>,
    pub metrics: Option<RawMetrics>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a node (a mapping with `name`)"
)]
pub(crate) struct RawNode {
    pub name: Scalar,
    pub control_socket: Option<Scalar>,
    pub state_dir: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a resource (a mapping of its settings)"
)]
pub(crate) struct RawResource {
    pub protocol: Option<Scalar>,
    pub device: Scalar,
    #[serde(default)]
    pub startup: RawStartup,
    #[serde(default)]
    pub disk: RawDisk,
    #[serde(default)]
    pub net: RawNet,
    #[serde(default)]
    pub syncer: RawSyncer,
    #[serde(default)]
    pub handlers: RawHandlers,
    pub on: UniqueMap<RawResourceNode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a mapping of startup settings"
)]
pub(crate) struct RawStartup {
    pub wfc_timeout: Option<Scalar>,
    pub degr_wfc_timeout: Option<Scalar>,
    pub outdated_wfc_timeout: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a mapping of disk settings"
)]
pub(crate) struct RawDisk {
    pub on_io_error: Option<Scalar>,
    pub fencing: Option<Scalar>,
    pub direct_io: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a mapping of net settings"
)]
pub(crate) struct RawNet {
    pub cram_hmac_alg: Option<Scalar>,
    pub shared_secret_file: Option<Scalar>,
    pub after_sb_0pri: Option<Scalar>,
    pub after_sb_1pri: Option<Scalar>,
    pub after_sb_2pri: Option<Scalar>,
    pub rr_conflict: Option<Scalar>,
    pub timeout: Option<Scalar>,
    pub ping_int: Option<Scalar>,
    pub ping_timeout: Option<Scalar>,
    pub connect_int: Option<Scalar>,
    pub max_buffers: Option<Scalar>,
    // issue 18 protocol A: the lag bound and the failover permission.
    pub max_lag: Option<Scalar>,
    pub max_lag_time: Option<Scalar>,
    pub on_lag: Option<Scalar>,
    pub allow_async_failover: Option<Scalar>,
    pub epoch_flush: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a mapping of syncer settings"
)]
pub(crate) struct RawSyncer {
    pub rate: Option<Scalar>,
    pub verify_alg: Option<Scalar>,
    pub csums_alg: Option<Scalar>,
    pub csums_for: Option<Scalar>,
    pub al_extents: Option<Scalar>,
    pub c_min_rate: Option<Scalar>,
    // issue 18 resync controller.
    pub c_plan_ahead: Option<Scalar>,
    pub c_fill_target: Option<Scalar>,
    pub c_max_rate: Option<Scalar>,
    // issue 18 verify: repair after verify, scheduled verify and its rate.
    pub verify_repair: Option<Scalar>,
    pub verify_interval: Option<Scalar>,
    pub verify_rate: Option<Scalar>,
}

/// Handler commands. The field names are the canonical handler names; `outdate-peer` is DRBD 8.3's
/// name for `fence-peer` and is what seed 004 uses.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a mapping of handler names to commands"
)]
pub(crate) struct RawHandlers {
    pub pri_on_incon_degr: Option<Scalar>,
    pub pri_lost_after_sb: Option<Scalar>,
    pub pri_lost: Option<Scalar>,
    pub local_io_error: Option<Scalar>,
    #[serde(alias = "outdate-peer")]
    pub fence_peer: Option<Scalar>,
    pub split_brain: Option<Scalar>,
    pub initial_split_brain: Option<Scalar>,
    pub before_resync_target: Option<Scalar>,
    pub after_resync_target: Option<Scalar>,
    pub out_of_sync: Option<Scalar>,
}

impl RawHandlers {
    /// (canonical name, command) for every handler that is set.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &Scalar)> {
        [
            ("pri-on-incon-degr", &self.pri_on_incon_degr),
            ("pri-lost-after-sb", &self.pri_lost_after_sb),
            ("pri-lost", &self.pri_lost),
            ("local-io-error", &self.local_io_error),
            ("fence-peer", &self.fence_peer),
            ("split-brain", &self.split_brain),
            ("initial-split-brain", &self.initial_split_brain),
            ("before-resync-target", &self.before_resync_target),
            ("after-resync-target", &self.after_resync_target),
            ("out-of-sync", &self.out_of_sync),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| (name, v)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a mapping with `disk`, `address` and `meta-disk`"
)]
pub(crate) struct RawResourceNode {
    pub disk: Scalar,
    pub address: Scalar,
    pub meta_disk: Option<Scalar>,
}

/// Any YAML scalar (string, number or bool) kept as its text.
///
/// `quoted` remembers whether it was a string so errors can show it as the user wrote it:
/// `"10.0.0.1"` for a string, `3` for a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar {
    pub text: String,
    pub quoted: bool,
}

impl Scalar {
    /// The value for an error message.
    pub fn shown(&self) -> String {
        if self.quoted {
            format!("{:?}", self.text)
        } else {
            self.text.clone()
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scalar, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a single value (a string or a number)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar {
                    text: v.to_string(),
                    quoted: true,
                })
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar {
                    text: v.to_string(),
                    quoted: false,
                })
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar {
                    text: v.to_string(),
                    quoted: false,
                })
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar {
                    text: v.to_string(),
                    quoted: false,
                })
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar {
                    text: v.to_string(),
                    quoted: false,
                })
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A string-keyed map that refuses duplicate keys (serde's own maps silently keep the last one, which
/// would hide a copy-pasted resource).
#[derive(Debug)]
pub(crate) struct UniqueMap<V>(pub BTreeMap<String, V>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        UniqueMap(BTreeMap::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<UniqueMap<V>, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = UniqueMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of names to settings")
            }

            fn visit_unit<E: de::Error>(self) -> Result<UniqueMap<V>, E> {
                Ok(UniqueMap::default())
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueMap<V>, A::Error> {
                let mut map = BTreeMap::new();
                while let Some(key) = access.next_key::<String>()? {
                    if map.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("`{key}` appears twice")));
                    }
                    let value = access.next_value::<V>()?;
                    map.insert(key, value);
                }
                Ok(UniqueMap(map))
            }
        }

        deserializer.deserialize_any(MapVisitor(std::marker::PhantomData))
    }
}

/// A mapping that keeps the file's order and refuses duplicate keys. Keys are [`Scalar`]s so that
/// `0:` (a YAML number, as LUN numbers are written) is accepted as well as a string.
#[derive(Debug)]
pub(crate) struct OrderedUniqueMap<V>(pub Vec<(Scalar, V)>);

impl<V> Default for OrderedUniqueMap<V> {
    fn default() -> Self {
        OrderedUniqueMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedUniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<OrderedUniqueMap<V>, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedUniqueMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_unit<E: de::Error>(self) -> Result<OrderedUniqueMap<V>, E> {
                Ok(OrderedUniqueMap::default())
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<OrderedUniqueMap<V>, A::Error> {
                let mut entries: Vec<(Scalar, V)> = Vec::new();
                while let Some(key) = access.next_key::<Scalar>()? {
                    if entries.iter().any(|(k, _)| k.text == key.text) {
                        return Err(de::Error::custom(format_args!(
                            "`{}` appears twice",
                            key.text
                        )));
                    }
                    let value = access.next_value::<V>()?;
                    entries.push((key, value));
                }
                Ok(OrderedUniqueMap(entries))
            }
        }

        deserializer.deserialize_any(MapVisitor(std::marker::PhantomData))
    }
}
