//! Test helpers shared by several CLI test binaries.

pub mod governance;
