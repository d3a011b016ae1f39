//! The records the core judges credentials by (apps, enrollments, grants), read through
//! caches so that a warm request asks the store nothing. Every cache here keeps the freshness
//! rule of [`super::fresh`]: a change this replica has seen is never undone by a read that
//! began before it.

use std::{sync::Arc, time::Duration};

use moka::sync::Cache;

use super::{
    AuthorityError,
    fresh::{FreshCache, Generations, Subject},
};
use crate::{
    domain::{AppId, Application, AuthGrant, ClientId, Enrollment, EnrollmentId, GrantId, OwnerId},
    store::DynStore,
};

pub struct Records {
    store: DynStore,
    generations: Arc<Generations>,
    apps_by_client: FreshCache<ClientId, Application>,
    apps: FreshCache<AppId, Application>,
    enrollments: FreshCache<EnrollmentId, Enrollment>,
    /// Which enrollment an (app, owner) pair names. Only a hint: the enrollment it points to
    /// is read (fresh) and must still be that app's and owner's, else the pair is read again.
    enrollment_ids: Option<Cache<(AppId, OwnerId), EnrollmentId>>,
    grants: FreshCache<GrantId, AuthGrant>,
}

impl Records {
    /// `ttl` of zero asks the store every time.
    pub fn new(
        store: DynStore,
        generations: Arc<Generations>,
        ttl: Duration,
        capacity: u64,
    ) -> Self {
        Self {
            store,
            apps_by_client: FreshCache::new(generations.clone(), ttl, capacity),
            apps: FreshCache::new(generations.clone(), ttl, capacity),
            enrollments: FreshCache::new(generations.clone(), ttl, capacity),
            enrollment_ids: (!ttl.is_zero()).then(|| {
                Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build()
            }),
            grants: FreshCache::new(generations.clone(), ttl, capacity),
            generations,
        }
    }

    pub async fn app_by_client_id(
        &self,
        client_id: &ClientId,
    ) -> Result<Option<Arc<Application>>, AuthorityError> {
        let store = &self.store;
        self.apps_by_client
            .get_or_load(
                client_id.clone(),
                Subject::Client(client_id.as_str()),
                async move { store.application_by_client_id(client_id).await },
            )
            .await
            .map_err(Into::into)
    }

    pub async fn app(&self, id: AppId) -> Result<Option<Arc<Application>>, AuthorityError> {
        let store = &self.store;
        self.apps
            .get_or_load(
                id,
                Subject::App(id),
                async move { store.application(id).await },
            )
            .await
            .map_err(Into::into)
    }

    pub async fn enrollment(
        &self,
        id: EnrollmentId,
    ) -> Result<Option<Arc<Enrollment>>, AuthorityError> {
        let store = &self.store;
        self.enrollments
            .get_or_load(id, Subject::Enrollment(id), async move {
                store.enrollment(id).await
            })
            .await
            .map_err(Into::into)
    }

    /// The enrollment of `owner_id` with the app.
    pub async fn enrollment_for_owner(
        &self,
        app_id: AppId,
        owner_id: &OwnerId,
    ) -> Result<Option<Arc<Enrollment>>, AuthorityError> {
        let key = (app_id, owner_id.clone());
        if let Some(id) = self.enrollment_ids.as_ref().and_then(|c| c.get(&key)) {
            match self.enrollment(id).await? {
                Some(e) if e.app_id == app_id && e.owner_id == *owner_id => return Ok(Some(e)),
                // Deleted, or its id re-created for another owner or app.
                _ => self.forget_owner(&key),
            }
        }
        let Some(found) = self.store.enrollment_for_owner(app_id, owner_id).await? else {
            return Ok(None);
        };
        // Only the id is remembered: the record itself is cached by id, under its own stamp.
        if let Some(ids) = &self.enrollment_ids {
            ids.insert(key, found.id);
        }
        Ok(Some(Arc::new(found)))
    }

    fn forget_owner(&self, key: &(AppId, OwnerId)) {
        if let Some(ids) = &self.enrollment_ids {
            ids.invalidate(key);
        }
    }

    pub async fn grant(&self, id: GrantId) -> Result<Option<Arc<AuthGrant>>, AuthorityError> {
        let store = &self.store;
        self.grants
            .get_or_load(id, Subject::Grant(id), async move { store.grant(id).await })
            .await
            .map_err(Into::into)
    }

    /// Everything remembered about an app is stale from now on. Without its id (a notice
    /// from an older replica) every app is read again.
    pub fn app_changed(&self, client_id: &str, id: Option<AppId>) {
        self.generations.bump(Subject::Client(client_id));
        match id {
            Some(id) => {
                self.generations.bump(Subject::App(id));
                self.apps.forget(&id);
            }
            None => self.generations.bump_all(),
        }
        if let Ok(client_id) = ClientId::parse(client_id) {
            self.apps_by_client.forget(&client_id);
        }
    }

    pub fn enrollment_changed(&self, id: EnrollmentId) {
        self.generations.bump(Subject::Enrollment(id));
        self.enrollments.forget(&id);
    }

    pub fn grant_changed(&self, id: GrantId) {
        self.generations.bump(Subject::Grant(id));
        self.grants.forget(&id);
    }
}
