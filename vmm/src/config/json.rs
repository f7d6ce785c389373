//! `--config FILE`: a `VmConfig` from JSON, and validation problems told
//! in the JSON's own field names rather than the command line's flags.

use super::validate::Problems;
use super::VmConfig;

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("expected a JSON object with the fields of VmConfig, found {0}")]
    NotAnObject(&'static str),
    #[error("not valid JSON")]
    Syntax(#[source] serde_json::Error),
    #[error("does not describe a VM")]
    Fields(#[source] serde_json::Error),
}

impl VmConfig {
    /// The VM a `--config` file describes. Only an object is one: serde
    /// would take an array as the struct's fields in order (`[]` giving
    /// a default VM).
    pub fn from_json(text: &str) -> Result<VmConfig, JsonError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(JsonError::Syntax)?;
        let kind = match &v {
            serde_json::Value::Object(_) => None,
            serde_json::Value::Array(_) => Some("an array"),
            serde_json::Value::Null => Some("null"),
            serde_json::Value::Bool(_) => Some("a boolean"),
            serde_json::Value::Number(_) => Some("a number"),
            serde_json::Value::String(_) => Some("a string"),
        };
        if let Some(k) = kind {
            return Err(JsonError::NotAnObject(k));
        }
        serde_json::from_value(v).map_err(JsonError::Fields)
    }
}

/// The command line's option names in `ConfigError` messages, and the
/// JSON fields they set.
const FLAG_TO_FIELD: &[(&str, &str)] = &[
    ("-m ", "memory = "),
    ("-smp: ", "smp: "),
    ("memory backend '", "memory_backend '"),
    ("num-queues", "num_queues"),
    ("acpi=on", "\"acpi\": true"),
    ("size=", "size = "),
];

/// `Problems` worded for a `--config` file.
#[derive(Debug)]
pub struct JsonProblems(pub Problems);

impl std::fmt::Display for JsonProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0 .0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let mut line = p.to_string();
            for (flag, field) in FLAG_TO_FIELD {
                line = line.replace(flag, field);
            }
            write!(f, "{line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for JsonProblems {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::HostLimits;

    #[test]
    fn only_an_object_is_a_vm() {
        for (text, kind) in [("[]", "an array"), ("null", "null"), ("3", "a number")] {
            let e = VmConfig::from_json(text).unwrap_err().to_string();
            assert!(e.contains(kind) && e.contains("object"), "{text}: {e}");
        }
        assert_eq!(VmConfig::from_json("{}").unwrap(), VmConfig::default());
    }

    #[test]
    fn problems_name_json_fields_not_flags() {
        let c = VmConfig::from_json(
            r#"{"memory": 4096, "smp": {"cpus": 3, "sockets": 2, "cores": 1, "threads": 1}}"#,
        )
        .unwrap();
        let host = HostLimits {
            memory: 1 << 30,
            max_vcpus: None,
        };
        let t = JsonProblems(c.validate(&host).unwrap_err()).to_string();
        assert!(t.contains("memory = ") && t.contains("smp: "), "{t}");
        assert!(!t.contains("-m ") && !t.contains("-smp"), "{t}");
    }
}
