//! Names a plugin's manifest may not take, checked when a plugin is loaded by
//! `weir run` (and reported by `weir config check`): the host's own topics and
//! group, and what belongs to another plugin.
//!
//! - **publish topics**: not the schedule topic (a record there is a deletion
//!   order the sweeper carries out) and not a dead-letter topic, its own
//!   included (only the host writes dead letters; `weir dlq replay` reads them);
//! - **`[consumer] group`**: not the schedule group, not another plugin's
//!   (two plugins in one group split each other's partitions);
//! - **`[capabilities.cache] namespace`**: not another plugin's name, which is
//!   that plugin's private namespace (a shared namespace has a name of its own).

use crate::config::Config;
use crate::manifest::Manifest;

/// A name the manifest takes that is the host's or another plugin's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservedError {
    #[error(transparent)]
    Template(#[from] crate::topics::TemplateError),
    #[error("{at} is the schedule topic (storage.schedule_topic): a record there is a deletion order; schedule deletions through the storage capability")]
    ScheduleTopic { at: String },
    #[error("{at} is the dead-letter topic of plugin {owner:?}: only the host writes dead letters (reject the event instead)")]
    DeadLetterTopic { at: String, owner: String },
    #[error("{at} is the schedule's consumer group (storage.schedule_group): name a group of the plugin's own")]
    ScheduleGroup { at: String },
    #[error("{at} is also plugin {other:?}'s group: two plugins in one group split each other's partitions; give each its own [consumer] group")]
    SharedGroup { at: String, other: String },
    #[error("capabilities.cache.namespace = {namespace:?} is plugin {other:?}'s private namespace: name a shared namespace that is not a plugin's name")]
    Namespace { namespace: String, other: String },
}

/// What one plugin's manifest takes, in full names.
#[derive(Debug, Clone)]
pub struct Claims {
    pub name: String,
    pub group: String,
    pub dead_letter_topics: Vec<String>,
}

impl Claims {
    pub fn of(config: &Config, m: &Manifest) -> Result<Claims, ReservedError> {
        let namer = config.namer()?;
        Ok(Claims {
            name: m.name.clone(),
            group: group_of(config, m),
            dead_letter_topics: m
                .topics
                .iter()
                .map(|t| config.dlq_topic(&namer.full_name(t), &m.name))
                .collect(),
        })
    }
}

fn group_of(config: &Config, m: &Manifest) -> String {
    m.consumer
        .group
        .clone()
        .unwrap_or_else(|| config.group_for(&m.name))
}

/// Refuse `m` when it takes a name reserved for the host or for one of
/// `plugins` (every plugin of the directory; `m`'s own entry is skipped).
pub fn check(config: &Config, m: &Manifest, plugins: &[Claims]) -> Result<(), ReservedError> {
    let namer = config.namer()?;
    let schedule_topic = config.schedule_topic()?;
    let others = || plugins.iter().filter(|c| c.name != m.name);
    let own = Claims::of(config, m)?;
    if let Some(publish) = &m.capabilities.publish {
        for (i, topic) in publish.topics.iter().enumerate() {
            let full = namer.full_name(topic);
            let at = format!("capabilities.publish.topics[{i}] = {topic:?} ({full})");
            if full == schedule_topic {
                return Err(ReservedError::ScheduleTopic { at });
            }
            let dead_letters = std::iter::once(&own).chain(others());
            if let Some(owner) = dead_letters
                .into_iter()
                .find(|c| c.dead_letter_topics.contains(&full))
            {
                return Err(ReservedError::DeadLetterTopic {
                    at,
                    owner: owner.name.clone(),
                });
            }
        }
    }
    let schedule_group = config.schedule_group()?;
    let at = format!("consumer.group = {:?}", own.group);
    if own.group == schedule_group {
        return Err(ReservedError::ScheduleGroup { at });
    }
    if let Some(other) = others().find(|c| c.group == own.group) {
        return Err(ReservedError::SharedGroup {
            at,
            other: other.name.clone(),
        });
    }
    if let Some(ns) = m
        .capabilities
        .cache
        .as_ref()
        .and_then(|c| c.namespace.as_ref())
    {
        if let Some(other) = others().find(|c| &c.name == ns) {
            return Err(ReservedError::Namespace {
                namespace: ns.clone(),
                other: other.name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Toml};
    use std::path::Path;

    fn config() -> Config {
        Config::from_figment(
            figment::Figment::new().merge(Toml::string(
                "[kafka]\nbootstrap_servers = \"b:9092\"\n[topics]\nprefix = \"dev\"\n",
            )),
            Path::new("weir.toml"),
        )
        .unwrap()
    }

    fn manifest(toml: &str) -> Manifest {
        Manifest::parse(toml, Path::new("p.toml")).unwrap()
    }

    #[test]
    fn reserved_topics_groups_and_namespaces_are_refused() {
        let c = config();
        let other = manifest("name = \"other\"\ntopics = [\"audio\"]\n");
        let plugins = vec![Claims::of(&c, &other).unwrap()];
        let refused = |toml: &str| {
            check(&c, &manifest(toml), &plugins)
                .unwrap_err()
                .to_string()
        };

        let ok = "name = \"p\"\ntopics = [\"in\"]\n[capabilities.publish]\ntopics = [\"out\"]\n";
        check(&c, &manifest(ok), &plugins).unwrap();

        let e = refused("name = \"p\"\ntopics = [\"in\"]\n[capabilities.publish]\ntopics = [\"weir-schedule\"]\n");
        assert!(e.contains("is the schedule topic"), "{e}");
        let e = refused(
            "name = \"p\"\ntopics = [\"in\"]\n[capabilities.publish]\ntopics = [\"audio.dlq\"]\n",
        );
        assert!(e.contains("dead-letter topic of plugin \"other\""), "{e}");
        let e = refused(
            "name = \"p\"\ntopics = [\"in\"]\n[capabilities.publish]\ntopics = [\"in.dlq\"]\n",
        );
        assert!(e.contains("dead-letter topic of plugin \"p\""), "{e}");
        let e = refused("name = \"p\"\ntopics = [\"in\"]\n[consumer]\ngroup = \"dev-other\"\n");
        assert!(e.contains("also plugin \"other\"'s group"), "{e}");
        let e =
            refused("name = \"p\"\ntopics = [\"in\"]\n[consumer]\ngroup = \"dev-weir-schedule\"\n");
        assert!(e.contains("schedule's consumer group"), "{e}");
        let e = refused(
            "name = \"p\"\ntopics = [\"in\"]\n[capabilities.cache]\nnamespace = \"other\"\n",
        );
        assert!(e.contains("\"other\"'s private namespace"), "{e}");
    }
}
