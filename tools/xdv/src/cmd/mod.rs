//! One module per `xdv` command.
pub mod accel;
pub mod audit;
pub mod bench;
pub mod build;
pub mod cluster;
pub mod doctor;
pub mod iso;
pub mod operate_args;
pub mod quota;
pub mod replay;
pub mod run;
pub mod sim;
pub mod submit;
pub mod switch;
pub mod task;
pub mod timeline;
pub mod verify;
