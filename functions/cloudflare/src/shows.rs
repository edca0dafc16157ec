//! Shows: the same record and rules as every host (`liveshop_room::show`); here the show's own
//! room object stores it.

pub use liveshop_room::show::Show;
