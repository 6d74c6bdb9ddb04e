//! Topic naming: logical names (what manifests and plugins use) to full names (what
//! the broker has), by a template with variables, per environment.
//!
//! `{prefix}-{topic}` with `prefix = "dev"` maps `track-deletions` to
//! `dev-track-deletions` (seed 000); `{env}.{domain}.{topic}.{version}` with
//! `env = "prod"`, `domain = "audio"`, `version = "v1"` maps `events` to
//! `prod.audio.events.v1` (seed 004).

use std::collections::BTreeMap;

/// What is wrong with a topic (or group) template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("topic template {0:?} has no {{topic}}")]
    NoTopic(String),
    #[error("topic template {template:?} uses {{{name}}}, which is not set (set `{name}` beside `template`)")]
    Unset { template: String, name: String },
    #[error("{template:?} uses {{{name}}}, which is not a [topics] variable")]
    NotAVariable { template: String, name: String },
    #[error("template {0:?} has an unclosed `{{`")]
    Unclosed(String),
}

#[derive(Debug, Clone)]
pub struct TopicNamer {
    template: String,
    vars: BTreeMap<String, String>,
}

impl TopicNamer {
    /// A namer for `template`; every `{name}` in it except `{topic}` must be in `vars`.
    pub fn new(template: &str, vars: BTreeMap<String, String>) -> Result<Self, TemplateError> {
        if !template.contains("{topic}") {
            return Err(TemplateError::NoTopic(template.to_string()));
        }
        for name in placeholders(template)? {
            if name != "topic" && !vars.contains_key(name) {
                return Err(TemplateError::Unset {
                    template: template.to_string(),
                    name: name.to_string(),
                });
            }
        }
        Ok(TopicNamer {
            template: template.to_string(),
            vars,
        })
    }

    /// `{prefix}-{topic}` with the given prefix.
    pub fn prefixed(prefix: &str) -> Self {
        let vars = BTreeMap::from([("prefix".to_string(), prefix.to_string())]);
        Self::new("{prefix}-{topic}", vars).expect("the default template is valid")
    }

    /// The full name of a logical topic.
    pub fn full_name(&self, logical: &str) -> String {
        let mut name = self.template.replace("{topic}", logical);
        for (k, v) in &self.vars {
            name = name.replace(&format!("{{{k}}}"), v);
        }
        name
    }

    /// The logical name of a full topic name, if it was made by this namer.
    pub fn logical_name(&self, full: &str) -> Option<String> {
        let probe = self.full_name("\u{0}");
        let (before, after) = probe.split_once('\u{0}')?;
        full.strip_prefix(before)?
            .strip_suffix(after)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
}

/// The `{name}` placeholders of a template, in order.
pub fn placeholders(template: &str) -> Result<Vec<&str>, TemplateError> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| TemplateError::Unclosed(template.to_string()))?;
        names.push(&rest[start + 1..start + end]);
        rest = &rest[start + end + 1..];
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_templates() {
        let dev = TopicNamer::prefixed("dev");
        assert_eq!(dev.full_name("track-deletions"), "dev-track-deletions");
        assert_eq!(
            dev.logical_name("dev-track-deletions").as_deref(),
            Some("track-deletions")
        );
        assert_eq!(dev.logical_name("prod-track-deletions"), None);

        let vars = [("env", "prod"), ("domain", "audio"), ("version", "v1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let prod = TopicNamer::new("{env}.{domain}.{topic}.{version}", vars).unwrap();
        assert_eq!(prod.full_name("events"), "prod.audio.events.v1");
        assert_eq!(
            prod.logical_name("prod.audio.events.v1").as_deref(),
            Some("events")
        );
    }

    #[test]
    fn missing_variables_are_named() {
        let err = TopicNamer::new("{env}-{topic}", BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("{env}"), "{err}");
        assert!(TopicNamer::new("static", BTreeMap::new()).is_err());
    }
}
