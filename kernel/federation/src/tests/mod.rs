//! Host tests, named after the seed's test numbers (§11.9, §12.10, §13.13).

mod confirm;
mod route;
mod timeout;
pub(crate) mod vivaldi;
