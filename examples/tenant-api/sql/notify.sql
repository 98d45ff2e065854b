-- Invalidates the tenant-api cache on every write to `users`, including
-- writes made outside the service (psql, migrations, other services):
-- `pg_notify` on the channel `cache_invalidation`, which the service's
-- listener (`cacheable::events::postgres`) turns into `delete_by_tags`.
-- The tags are the ones of the cached handlers: `users` and `user:<id>`,
-- in the row's tenant. Installed by the service at startup (idempotent).
CREATE OR REPLACE FUNCTION cacheable_notify_users() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    PERFORM pg_notify('cache_invalidation', json_build_object(
      'tenant', OLD.tenant, 'tags', json_build_array('user:' || OLD.id, 'users'))::text);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    PERFORM pg_notify('cache_invalidation', json_build_object(
      'tenant', NEW.tenant, 'tags', json_build_array('user:' || NEW.id, 'users'))::text);
  END IF;
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS cacheable_notify ON users;

CREATE TRIGGER cacheable_notify AFTER INSERT OR UPDATE OR DELETE ON users
  FOR EACH ROW EXECUTE FUNCTION cacheable_notify_users();
