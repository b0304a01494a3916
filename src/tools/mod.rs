//! Tools around the product: the demo and the benchmarks, both driven
//! against the built-in IM simulator.

pub mod bench;
pub mod demo;

use crate::im::TransportError;
use crate::im::endpoint::EndpointError;
use crate::oneshot::apply::{ApplyError, RenderError};
use crate::oneshot::manifests::ManifestError;
use crate::simulator::FetchError;

/// Why the demo or a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("the examples do not load")]
    Examples(#[source] ManifestError),
    #[error("the simulator's groups do not parse: {0}")]
    Seed(String),
    #[error("the simulator or a file failed")]
    Io(#[from] std::io::Error),
    #[error("cannot read the simulator's log")]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("cannot set up the IM client")]
    ImClient(#[from] TransportError),
    #[error("the simulator's address is not an endpoint")]
    Endpoint(#[from] EndpointError),
    #[error("a benchmark worker failed")]
    Worker(#[from] tokio::task::JoinError),
}

impl ToolError {
    /// A bounded label for logs.
    pub fn category(&self) -> &'static str {
        match self {
            ToolError::Examples(_) => "Examples",
            ToolError::Seed(_) => "Seed",
            ToolError::Io(_) => "Io",
            ToolError::Fetch(_) => "Fetch",
            ToolError::Apply(error) => error.category(),
            ToolError::Render(_) => "Render",
            ToolError::ImClient(_) => "ImClient",
            ToolError::Endpoint(_) => "Endpoint",
            ToolError::Worker(_) => "Worker",
        }
    }
}
