//! One module per `xdv` command.
pub mod accel;
pub mod audit;
pub mod bench;
pub mod build;
pub mod cluster;
pub mod doctor;
pub mod iso;
pub mod quota;
pub mod run;
pub mod sim;
pub mod submit;
pub mod switch;
pub mod task;
