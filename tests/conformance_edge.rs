//! The conformance suite (`tests/conformance/`) against the edge node, in this process.

mod common;
mod conformance;

use conformance::Host;

conformance_cases!(Host::edge);
