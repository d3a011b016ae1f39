-- Network binding (Vault's secret_id_bound_cidrs / token_bound_cidrs): the networks an
-- app's credentials may be presented from, per app and per secret, and the networks the
-- app's tokens may be used from. Canonical CIDR blocks separated by spaces, as scopes are
-- kept; '' binds nothing (any address), which is what every existing row gets.
ALTER TABLE applications ADD COLUMN allowed_cidrs TEXT NOT NULL DEFAULT '';
ALTER TABLE applications ADD COLUMN token_bound_cidrs TEXT NOT NULL DEFAULT '';
ALTER TABLE app_secrets ADD COLUMN allowed_cidrs TEXT NOT NULL DEFAULT '';
-- The binding of the token that created a grant, which the grant's own tokens inherit.
ALTER TABLE auth_grants ADD COLUMN token_bound_cidrs TEXT NOT NULL DEFAULT '';
