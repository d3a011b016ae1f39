//! Integration tests: the real server on port 0, over SQLite by default and over a fresh
//! PostgreSQL database per test when TEST_DATABASE_URL is set.

mod admin;
mod admin_openapi;
mod audit;
mod basic_forms;
mod cli;
mod connections;
mod credentials;
mod edges;
mod endorsed;
mod enrollments;
mod faults;
mod feed;
mod go_client;
mod grants;
mod helpers;
mod intercept;
mod lifecycle;
mod limits;
mod lineage;
mod metrics;
mod network;
mod oauth;
mod openapi;
mod pg_proxy;
mod quotas;
mod secrets;
mod store_contract;
mod tokens;
mod writes;
