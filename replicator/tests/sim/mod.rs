pub mod model;
pub mod world;
