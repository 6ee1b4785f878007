//! One file per page.

pub mod accounts;
pub mod admin;
pub mod api_keys;
pub mod confirm;
pub mod connect;
pub mod home;
pub mod login;
pub mod password;
pub mod register;
pub mod second_factor;
pub mod security;
pub mod sessions;
pub mod sign_in_link;
pub mod webhooks;
