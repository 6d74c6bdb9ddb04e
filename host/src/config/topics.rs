//! `[topics]`: how logical topic names become the broker's, and how topics are created.

use super::*;

/// `[topics]`: `template`, optional `create`, and any other key is a template variable.
#[derive(Debug, Clone, Deserialize)]
pub struct TopicsConfig {
    #[serde(default = "default_template")]
    pub template: String,
    #[serde(default)]
    pub create: Option<CreateTopics>,
    #[serde(flatten)]
    pub vars: BTreeMap<String, String>,
}

fn default_template() -> String {
    "{prefix}-{topic}".into()
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            template: default_template(),
            create: None,
            vars: BTreeMap::from([("prefix".to_string(), "dev".to_string())]),
        }
    }
}

/// Create missing topics at start-up with this layout (seed 001's CreateTopicIfNotExists).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopics {
    pub partitions: i32,
    #[serde(default = "one")]
    pub replication: i32,
}

fn one() -> i32 {
    1
}
