//! The self-supervised methods. A method is one file of this folder holding only what differs
//! between methods: its parameter table and their defaults, its checks, its built-in recipe (heads,
//! optimiser, batch size), how its views are forwarded and which loss they become, its loss's term
//! names, and what `infomax loss` evaluates for it. Everything shared — the encoder and heads
//! ([`Network`]), BYOL's target, the optional variance term — lives here once, and the registry
//! below turns the files into the [`Method`] enum that the rest of the code dispatches on.
//!
//! # Adding a method
//!
//! A method that is VICReg without its covariance term takes a file `vicreg_no_cov.rs`:
//!
//! ```text
//! //! VICReg without the covariance term (the VICReg paper's ablation).
//! use super::{MethodImpl, Network, StepContext, StepOutput};
//! use crate::config::{HeadConfig, OptimizerConfig, RunConfig};
//!
//! pub struct VicregNoCov;
//!
//! impl MethodImpl for VicregNoCov {
//!     const NAME: &'static str = "vicreg-no-cov";
//!     const TITLE: &'static str = "VICReg without covariance";
//!     const TWO_VIEWS: bool = true;
//!     const TERMS: &'static [&'static str] = &["invariance", "variance"];
//!     type Params = infomax_losses::VicregWeights;
//!     type LossSettings = infomax_losses::VicregWeights;
//!
//!     fn recipe(config: &mut RunConfig) {
//!         config.projector = HeadConfig::fair_projector(true);
//!         config.optimizer = OptimizerConfig::lars();
//!     }
//!     fn step_loss(config: &RunConfig, net: &Network, views: &[Tensor], _: &StepContext) -> Result<StepOutput> {
//!         let z = net.embed_views(views)?;
//!         let w = infomax_losses::VicregWeights { cov_coeff: 0.0, ..*Self::params(config) };
//!         let t = infomax_losses::vicreg(&z[0], &z[1], &w)?;
//!         Ok(StepOutput { loss: t.loss, terms: vec![("invariance", t.invariance), ("variance", t.variance)], embeddings: z })
//!     }
//!     fn loss(views: &[Tensor], w: Self::LossSettings) -> Result<LossValue> { … }
//! }
//! ```
//!
//! and one line in the registry: `VicregNoCov => vicreg_no_cov::VicregNoCov [vicreg_no_cov];`
//! (the bracket names its table in the run configuration; a method without parameters leaves it
//! out). Experiment files, validation, `infomax loss`, the database and the report then know it.

mod network;

pub use network::{Branch, Network, Target};

use std::fmt::Debug;

use candle_core::Tensor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{RunConfig, VarianceRegConfig};
use crate::Result;

/// A failed check: the field (as a path in the run configuration) and what was expected.
pub type Check = std::result::Result<(), (String, String)>;

/// Where a training step is: for the methods that draw randomness (W-MSE's sub-batches) or
/// follow a schedule (BYOL's EMA rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepContext {
    pub seed: u64,
    pub epoch: u64,
    pub step: u64,
    /// Fraction of training done, in [0, 1].
    pub progress: f64,
}

/// The loss to differentiate, its named unweighted terms (scalars) for the records, and the
/// projector outputs of every view for the collapse diagnostics.
pub struct StepOutput {
    pub loss: Tensor,
    pub terms: Vec<(&'static str, Tensor)>,
    pub embeddings: Vec<Tensor>,
}

/// A loss evaluated on given embeddings (`infomax loss`): the value and its named terms.
pub struct LossValue {
    pub loss: Tensor,
    pub terms: Vec<(&'static str, Tensor)>,
}

/// What one method's file provides. Only the registry calls these; everything else goes through
/// [`Method`].
pub trait MethodImpl {
    /// Its name in experiment files, on the command line and in the database.
    const NAME: &'static str;
    /// Its name in prose and messages.
    const TITLE: &'static str;
    /// Its loss compares exactly two views (otherwise two or more).
    const TWO_VIEWS: bool = false;
    /// It needs a predictor head on the projector (otherwise it takes none).
    const PREDICTOR: bool = false;
    /// It keeps an EMA target copy of the online branch.
    const TARGET: bool = false;
    /// Its loss's terms as recorded per step, in order.
    const TERMS: &'static [&'static str] = &[];
    /// Its table in the run configuration; `Default` gives the authors' values. `()` for a method
    /// without parameters.
    type Params: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Default;
    /// What `infomax loss --help` says of those keys beyond their names and defaults.
    const LOSS_NOTE: &'static str = "";
    /// The keys `infomax loss --set` takes, with their defaults in `Default`, in order.
    type LossSettings: Serialize + DeserializeOwned + Default;

    /// The built-in recipe: what the method sets over the shared defaults ([`RunConfig::defaults`]):
    /// heads, optimiser, batch size.
    fn recipe(config: &mut RunConfig);

    /// What types cannot express about this method's run; each failure names the field.
    fn check(_config: &RunConfig) -> Check {
        Ok(())
    }

    /// Forward a step's views and compute the loss.
    fn step_loss(config: &RunConfig, net: &Network, views: &[Tensor], ctx: &StepContext) -> Result<StepOutput>;

    /// The EMA rate its target moves by at a point of training (`progress` in [0, 1]).
    fn target_ema_rate(_config: &RunConfig, _progress: f64) -> Option<f64> {
        None
    }

    /// Runs after each optimiser step (BYOL moves its target network here).
    fn after_step(_config: &RunConfig, _net: &Network, _ctx: &StepContext) -> Result<()> {
        Ok(())
    }

    /// The loss on given embeddings (f64, views already checked for equal shapes and N ≥ 2).
    fn loss(views: &[Tensor], settings: Self::LossSettings) -> Result<LossValue>;
}

/// The registry: one line per method, `Variant => file::Type [table];`. It declares the files,
/// the [`Method`] enum, the run configuration's method tables ([`MethodParams`]) and the dispatch.
macro_rules! registry {
    ($($variant:ident => $file:ident :: $imp:ident $([$table:ident])?;)*) => {
        $(mod $file;)*

        /// The self-supervised method of a run: one per file of `runner/src/method/`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Method {
            $($variant,)*
        }

        const COUNT: usize = [$(stringify!($variant)),*].len();

        /// Every method's name, in the registry's order.
        const NAMES: [&str; COUNT] = [$(<$file::$imp as MethodImpl>::NAME),*];

        impl Method {
            /// Every method, in the registry's order.
            pub const ALL: [Method; COUNT] = [$(Method::$variant),*];

            /// Its name in experiment files, on the command line and in the database.
            pub fn name(self) -> &'static str {
                match self { $(Method::$variant => <$file::$imp as MethodImpl>::NAME,)* }
            }

            /// Its name in prose.
            pub fn title(self) -> &'static str {
                match self { $(Method::$variant => <$file::$imp as MethodImpl>::TITLE,)* }
            }

            /// Its loss compares exactly two views.
            pub fn two_views(self) -> bool {
                match self { $(Method::$variant => <$file::$imp as MethodImpl>::TWO_VIEWS,)* }
            }

            /// It needs a predictor head.
            pub fn needs_predictor(self) -> bool {
                match self { $(Method::$variant => <$file::$imp as MethodImpl>::PREDICTOR,)* }
            }

            /// It keeps an EMA target copy of the online branch.
            pub fn has_target(self) -> bool {
                match self { $(Method::$variant => <$file::$imp as MethodImpl>::TARGET,)* }
            }

            /// Its loss's terms as recorded per step.
            pub fn terms(self) -> &'static [&'static str] {
                match self { $(Method::$variant => <$file::$imp as MethodImpl>::TERMS,)* }
            }

            /// Set its parameter table to the authors' values and apply its recipe.
            pub(crate) fn recipe(self, config: &mut RunConfig) {
                match self {
                    $(Method::$variant => {
                        $(config.method_params.$table = Some(Default::default());)?
                        <$file::$imp as MethodImpl>::recipe(config)
                    })*
                }
            }

            /// Its own checks of a run configuration.
            pub(crate) fn check(self, config: &RunConfig) -> Check {
                match self { $(Method::$variant => <$file::$imp as MethodImpl>::check(config),)* }
            }

            fn method_loss(self, config: &RunConfig, net: &Network, views: &[Tensor], ctx: &StepContext) -> Result<StepOutput> {
                match self { $(Method::$variant => <$file::$imp as MethodImpl>::step_loss(config, net, views, ctx),)* }
            }

            /// The EMA rate of its target at a point of training; `None` without a target.
            pub fn target_ema_rate(self, config: &RunConfig, progress: f64) -> Option<f64> {
                match self { $(Method::$variant => <$file::$imp as MethodImpl>::target_ema_rate(config, progress),)* }
            }

            /// Runs after each optimiser step.
            pub fn after_step(self, config: &RunConfig, net: &Network, ctx: &StepContext) -> Result<()> {
                match self { $(Method::$variant => <$file::$imp as MethodImpl>::after_step(config, net, ctx),)* }
            }

            /// What `infomax loss --help` says of its keys beyond their names and defaults.
            pub fn loss_note(self) -> &'static str {
                match self { $(Method::$variant => <$file::$imp as MethodImpl>::LOSS_NOTE,)* }
            }

            /// The keys `infomax loss --set` takes and their defaults, in order.
            pub fn loss_keys(self) -> Vec<(String, toml::Value)> {
                match self {
                    $(Method::$variant => crate::loss::settings_table(
                        &<<$file::$imp as MethodImpl>::LossSettings as Default>::default(),
                    ),)*
                }
            }

            /// The loss on given embeddings with `set` (key, value) over [`Method::loss_keys`].
            pub(crate) fn loss(self, views: &[Tensor], set: &[(String, String)]) -> Result<LossValue> {
                match self {
                    $(Method::$variant => {
                        let settings = crate::loss::parse_settings(self, set)?;
                        <$file::$imp as MethodImpl>::loss(views, settings)
                    })*
                }
            }
        }

        /// Each method's parameters, a table of the run configuration under the method's key:
        /// present exactly when it is the run's method.
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
        pub struct MethodParams {
            $($(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $table: Option<<$file::$imp as MethodImpl>::Params>,
            )?)*
        }

        impl MethodParams {
            /// The keys of the method tables, in the registry's order.
            pub const KEYS: &'static [&'static str] = &[$($(stringify!($table),)?)*];

            /// Parse `value` as the table under `key`, locating a bad field (`None`: not a
            /// method's key).
            pub(crate) fn parse_table(
                key: &str,
                value: toml::Value,
            ) -> Option<std::result::Result<(), serde_path_to_error::Error<toml::de::Error>>> {
                $($(
                    if key == stringify!($table) {
                        return Some(
                            serde_path_to_error::deserialize::<_, <$file::$imp as MethodImpl>::Params>(value).map(drop),
                        );
                    }
                )?)*
                None
            }

            /// Each method's table is present exactly when it is the run's method.
            pub(crate) fn check(&self, method: Method) -> Check {
                $($(
                    let key = stringify!($table);
                    match (method == Method::$variant, self.$table.is_some()) {
                        (true, false) => {
                            return Err((key.into(), format!("the [{key}] parameters of method {} are missing", method.name())))
                        }
                        (false, true) => {
                            return Err((
                                key.into(),
                                format!(
                                    "[{key}] belongs to method {}, but this run's method is {}",
                                    Method::$variant.name(),
                                    method.name()
                                ),
                            ))
                        }
                        _ => {}
                    }
                )?)*
                Ok(())
            }
        }

        $($(
            impl $file::$imp {
                /// This method's table of a validated run configuration.
                pub(crate) fn params(config: &RunConfig) -> &<Self as MethodImpl>::Params {
                    config.method_params.$table.as_ref().expect(concat!("validated: the run carries [", stringify!($table), "]"))
                }
            }
        )?)*
    };
}

registry! {
    Vicreg => vicreg::Vicreg [vicreg];
    BarlowTwins => barlow_twins::BarlowTwins [barlow_twins];
    WMse => wmse::Wmse [wmse];
    Simclr => simclr::Simclr [simclr];
    Byol => byol::Byol [byol];
    Simsiam => simsiam::Simsiam;
}

pub use wmse::sub_batch_permutations;

impl Method {
    /// The method of a file that names none: the registry's first.
    pub const DEFAULT: Method = Method::ALL[0];

    /// The loss to differentiate for a training step: the method's own, plus VICReg's variance
    /// term on every view's embedding when the run asks for it (`variance_reg`).
    pub fn step_loss(
        self,
        config: &RunConfig,
        net: &Network,
        views: &[Tensor],
        ctx: &StepContext,
    ) -> Result<StepOutput> {
        let mut out = self.method_loss(config, net, views, ctx)?;
        if let Some(v) = &config.variance_reg {
            add_variance_term(&mut out, v)?;
        }
        Ok(out)
    }
}

/// `coeff · mean_views variance(z)`, added to the loss and recorded as `variance_reg`.
fn add_variance_term(out: &mut StepOutput, v: &VarianceRegConfig) -> Result<()> {
    let mut total: Option<Tensor> = None;
    for z in &out.embeddings {
        let t = infomax_losses::vicreg::variance(z, v.gamma, v.eps)?;
        total = Some(match total {
            Some(acc) => (acc + t)?,
            None => t,
        });
    }
    let mean = (total.expect("at least two views") / out.embeddings.len() as f64)?;
    out.loss = (&out.loss + mean.affine(v.coeff, 0.0)?)?;
    out.terms.push(("variance_reg", mean));
    Ok(())
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Method::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            format!("unknown method `{s}`; expected one of {}", Method::ALL.map(Method::name).join(", "))
        })
    }
}

impl Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(|_| serde::de::Error::unknown_variant(&name, &NAMES))
    }
}

#[cfg(test)]
mod tests;
