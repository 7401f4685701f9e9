//! `--set key.path=value`: a command-line override of one field of every run.

use toml::{Table, Value};

use super::RESERVED;
use crate::{Error, Result};

/// One `--set key.path=value` override; the value is TOML (bare words are strings).
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub key: Vec<String>,
    pub value: Value,
    pub raw: String,
}

impl std::str::FromStr for Override {
    type Err = Error;

    fn from_str(arg: &str) -> Result<Self> {
        let bad = |what: &str| Error::Override { arg: arg.to_string(), what: what.to_string() };
        let (key, value) = arg.split_once('=').ok_or_else(|| bad("expected KEY=VALUE, e.g. train.epochs=2"))?;
        let key: Vec<String> = key.trim().split('.').map(|s| s.trim().to_string()).collect();
        if key.iter().any(String::is_empty) {
            return Err(bad("the key has an empty part; expected a dotted path such as optimizer.lr"));
        }
        if RESERVED.contains(&key[0].as_str()) {
            return Err(bad(&format!("`{}` is set by infomax, not by overrides", key[0])));
        }
        let value = value.trim();
        let value = match toml::from_str::<Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").expect("parsed table has v"),
            Err(_) => Value::String(value.to_string()),
        };
        Ok(Override { key, value, raw: arg.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_values_parse_as_toml_or_words() {
        let o: Override = "projector=[8, 4]".parse().unwrap();
        assert_eq!(o.value, Value::Array(vec![Value::Integer(8), Value::Integer(4)]));
        let o: Override = "method=vicreg".parse().unwrap();
        assert_eq!(o.value, Value::String("vicreg".into()));
        assert!("nokey".parse::<Override>().is_err());
    }
}
