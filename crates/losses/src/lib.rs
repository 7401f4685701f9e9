//! Self-supervised losses as pure functions of embedding tensors.
//!
//! This crate knows tensors only: no model, no data, no configuration files. Each loss lives in
//! its own module with the paper, the formula and the defaults in its doc comment, and each term
//! is a named public function so it can be tested alone.

mod error;
pub mod stats;
pub mod vicreg;

pub use error::{Error, Result};
pub use vicreg::{vicreg, VicregTerms, VicregWeights};
