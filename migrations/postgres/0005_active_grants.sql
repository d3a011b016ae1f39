-- The cap on a profile's active grants counts them on every creation; this keeps that
-- count to the profile's active grants instead of its whole history.
CREATE INDEX auth_grants_active_by_profile
    ON auth_grants (profile_kind, profile_id) WHERE status = 'active';
