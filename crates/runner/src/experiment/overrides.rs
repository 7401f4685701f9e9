//! `--set key.path=value`: a command-line override of one field of every run.

use toml::{Table, Value};

use super::RESERVED;
use crate::config::RunConfig;
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

impl Override {
    /// `config` with `overrides` applied, read back strictly and validated: for commands that
    /// start from a built-in configuration rather than an experiment file.
    pub fn apply_all(overrides: &[Override], config: &RunConfig) -> Result<RunConfig> {
        let Ok(Value::Table(mut table)) = Value::try_from(config) else {
            unreachable!("a run configuration serialises to a table")
        };
        for o in overrides {
            super::layering::set_path(&mut table, &o.key, o.value.clone())
                .map_err(|what| Error::Override { arg: o.raw.clone(), what })?;
        }
        let named = |field: String, what: String| {
            // The override that set the field, else all of them: the field kept its built-in value.
            let arg = match overrides.iter().rev().find(|o| field.starts_with(&o.key.join("."))) {
                Some(o) => o.raw.clone(),
                None => overrides.iter().map(|o| o.raw.as_str()).collect::<Vec<_>>().join(" --set "),
            };
            Error::Override { arg, what: format!("field `{field}`: {what}") }
        };
        let config = RunConfig::from_toml(table).map_err(|(field, what)| named(field, what))?;
        crate::validate::validate(&config).map_err(|(field, what)| named(field, what))?;
        Ok(config)
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

    #[test]
    fn overrides_apply_to_a_built_in_configuration_and_name_a_bad_field() {
        let base = RunConfig::defaults(crate::config::Method::WMse, crate::config::Dataset::Cifar10);
        let set: Vec<Override> = vec!["wmse.w_size=256".parse().unwrap(), "train.epochs=30".parse().unwrap()];
        let config = Override::apply_all(&set, &base).unwrap();
        assert_eq!((config.method_params.wmse.unwrap().w_size, config.train.epochs), (256, 30));
        let err = Override::apply_all(&["wmse.w_size=100".parse().unwrap()], &base).unwrap_err().to_string();
        assert!(err.contains("wmse.w_size=100") && err.contains("divisor of train.batch_size (512)"), "{err}");
        let err = Override::apply_all(&["wmse.w_sise=100".parse().unwrap()], &base).unwrap_err().to_string();
        assert!(err.contains("w_sise"), "{err}");
    }
}
