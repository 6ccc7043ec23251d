//! One module per `xdv` command.
pub mod audit;
pub mod bench;
pub mod build;
pub mod cluster;
pub mod iso;
pub mod run;
pub mod sim;
pub mod switch;
pub mod task;
