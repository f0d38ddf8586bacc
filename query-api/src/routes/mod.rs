//! The public routes, one file per resource.

pub(crate) mod changes;
pub(crate) mod documents;
pub(crate) mod search;
pub(crate) mod status;
