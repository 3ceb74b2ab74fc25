//! Who may call which management endpoint and see which objects: RabbitMQ 3.10's
//! management plugin rules (`rabbit_mgmt_util`: `is_authorized*`, `filter_vhost`,
//! `filter_user`, `list_visible_vhosts`), in one place, for every handler.
//!
//! The tags: `management` may use the API and sees the objects of the vhosts it has
//! permissions in, and only its own connections and channels; `policymaker` also
//! manages policies and parameters in those vhosts; `monitoring` sees every
//! connection, channel and node, and every vhost's name and totals; `administrator`
//! may do everything. A user with none of them is refused at the door
//! ([`require_management`]). Refusals are RabbitMQ's 401 `not_authorised` with its
//! reasons.
//!
//! Mutations also need the AMQP permission the same operation needs over AMQP
//! ([`authorize`]: configure to declare or delete, write to publish, read to get or
//! purge), as RabbitMQ's API runs them as the caller.
//!
//! Uses `auth` (tags, vhost access, permissions) and the broker's vhost list; owns no
//! state.

use super::{ApiError, Caller};
use crate::auth::{Permission, Resource, Tag};
use crate::error::AmqpError;
use crate::server::Server;

/// RabbitMQ's 401 for a caller its rules refuse.
fn not_authorised(reason: &str) -> ApiError {
    ApiError::new(401, "not_authorised", reason)
}

fn has(caller: &Caller, tags: &[Tag]) -> bool {
    caller.tags.iter().any(|t| tags.contains(t))
}

/// `administrator`.
pub fn is_admin(caller: &Caller) -> bool {
    has(caller, &[Tag::Administrator])
}

/// `monitoring` or `administrator`: sees everyone's connections and channels, nodes.
pub fn is_monitor(caller: &Caller) -> bool {
    has(caller, &[Tag::Administrator, Tag::Monitoring])
}

/// `policymaker` or `administrator`.
pub fn is_policymaker(caller: &Caller) -> bool {
    has(caller, &[Tag::Administrator, Tag::Policymaker])
}

/// Any management tag: may use the API at all.
pub fn is_management(tags: &[Tag]) -> bool {
    tags.iter().any(|t| {
        matches!(
            t,
            Tag::Administrator | Tag::Monitoring | Tag::Policymaker | Tag::Management
        )
    })
}

/// The door: a user without a management tag is refused every API call.
pub fn require_management(tags: &[Tag]) -> Result<(), ApiError> {
    if is_management(tags) {
        Ok(())
    } else {
        Err(not_authorised("Not management user"))
    }
}

/// Administrator-only endpoints (users, permissions, vhost records, definitions...).
pub fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if is_admin(caller) {
        Ok(())
    } else {
        Err(not_authorised("Not administrator user"))
    }
}

/// Monitoring endpoints (nodes).
pub fn require_monitor(caller: &Caller) -> Result<(), ApiError> {
    if is_monitor(caller) {
        Ok(())
    } else {
        Err(not_authorised("Not monitor user"))
    }
}

/// Whether `caller` may log into `vhost` (has a permission record there, and the vhost
/// exists): RabbitMQ's "login vhosts".
fn may_login(server: &Server, caller: &Caller, vhost: &str) -> bool {
    server.broker.lookup_vhost(vhost.as_bytes()).is_some()
        && server.auth.can_access_vhost(&caller.user, vhost)
}

/// An endpoint scoped to `vhost` (RabbitMQ's `is_authorized_vhost`): administrators,
/// or a user with permissions in it. A vhost that does not exist passes (the handler
/// answers its 404).
pub fn require_vhost(server: &Server, caller: &Caller, vhost: &str) -> Result<(), ApiError> {
    if is_admin(caller)
        || server.broker.lookup_vhost(vhost.as_bytes()).is_none()
        || may_login(server, caller, vhost)
    {
        Ok(())
    } else {
        Err(not_authorised("User not authorised to access virtual host"))
    }
}

/// Like [`require_vhost`], monitors included (`is_authorized_vhost_visible_for_monitoring`).
pub fn require_vhost_visible(
    server: &Server,
    caller: &Caller,
    vhost: &str,
) -> Result<(), ApiError> {
    if is_monitor(caller) {
        return Ok(());
    }
    require_vhost(server, caller, vhost)
}

/// Policies and parameters of `vhost` (`is_authorized_policies`): administrators, or a
/// policymaker with permissions in it.
pub fn require_policies(server: &Server, caller: &Caller, vhost: &str) -> Result<(), ApiError> {
    let vhost_ok =
        server.broker.lookup_vhost(vhost.as_bytes()).is_none() || may_login(server, caller, vhost);
    if is_admin(caller) || (is_policymaker(caller) && vhost_ok) {
        Ok(())
    } else {
        Err(not_authorised("User not authorised to access object"))
    }
}

/// One connection or channel owned by `owner` (`is_authorized_user`): its owner, a
/// monitor to look at it, an administrator to close it.
pub fn require_owner(caller: &Caller, owner: &str, delete: bool) -> Result<(), ApiError> {
    let by_tag = if delete {
        is_admin(caller)
    } else {
        is_monitor(caller)
    };
    if by_tag || caller.user.name() == owner {
        Ok(())
    } else {
        Err(not_authorised("User not authorised to access object"))
    }
}

/// Whether the objects of `vhost` (queues, exchanges, bindings) are listed to `caller`
/// (RabbitMQ's `filter_vhost`): every vhost for an administrator, the vhosts it has
/// permissions in for everyone else, monitors included.
pub fn visible_vhost(server: &Server, caller: &Caller, vhost: &str) -> bool {
    is_admin(caller) || may_login(server, caller, vhost)
}

/// Whether `vhost` itself shows in `/api/vhosts` and its totals in the overview
/// (`list_visible_vhosts`): monitors see every vhost.
pub fn listed_vhost(server: &Server, caller: &Caller, vhost: &str) -> bool {
    is_monitor(caller) || may_login(server, caller, vhost)
}

/// Whether a connection, channel or consumer of user `owner` is listed to `caller`
/// (`filter_user`): monitors see everyone's, others their own.
pub fn visible_owner(caller: &Caller, owner: &str) -> bool {
    is_monitor(caller) || caller.user.name() == owner
}

/// The AMQP permission an API mutation needs, as the same operation over AMQP.
/// Err is the AMQP refusal, for the handler to present as RabbitMQ's API does (most
/// answer [`refused`]'s 401 "Access refused.", some show the AMQP text).
pub fn check(
    server: &Server,
    caller: &Caller,
    vhost: &str,
    perm: Permission,
    resource: Resource<'_>,
) -> Result<(), AmqpError> {
    server.auth.authorize(&caller.user, vhost, perm, resource)
}

/// [`check`], refused as most of RabbitMQ's API refuses: 401 "Access refused.".
pub fn authorize(
    server: &Server,
    caller: &Caller,
    vhost: &str,
    perm: Permission,
    resource: Resource<'_>,
) -> Result<(), ApiError> {
    check(server, caller, vhost, perm, resource).map_err(ApiError::from)
}

/// The topic permission `perm` of `caller` on `routing_key` at exchange `exchange` of
/// `vhost`, when that exchange exists and is a topic exchange (RabbitMQ checks no
/// other kind); Err is the AMQP refusal.
pub fn check_topic(
    server: &Server,
    caller: &Caller,
    vhost: &str,
    perm: Permission,
    exchange: &str,
    routing_key: &[u8],
) -> Result<(), AmqpError> {
    let topic = server
        .broker
        .lookup_vhost(vhost.as_bytes())
        .and_then(|(v, _)| server.broker.exchange_id(v, exchange.as_bytes()))
        .and_then(|id| server.broker.exchange(id))
        .is_some_and(|x| x.kind == crate::broker::exchange::ExchangeKind::Topic);
    if !topic {
        return Ok(());
    }
    server
        .auth
        .authorize_topic(&caller.user, vhost, perm, exchange.as_bytes(), routing_key)
}

/// A refusal shown with its AMQP text, as RabbitMQ's `POST .../get` and the aliveness
/// test answer: 401 `not_authorised` "ACCESS_REFUSED - access to queue 'q' in vhost
/// 'v' refused for user 'u'".
pub fn refused_with_text(e: AmqpError) -> ApiError {
    if e.code == crate::error::ReplyCode::AccessRefused {
        not_authorised(&e.reply_text())
    } else {
        ApiError::from(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::User;

    fn caller(tags: &[Tag]) -> Caller {
        Caller {
            user: User::default(),
            peer: "127.0.0.1:1".parse().unwrap(),
            tags: tags.to_vec(),
        }
    }

    #[test]
    fn tags_grant_what_rabbitmq_grants() {
        assert!(require_management(&[]).is_err());
        assert_eq!(
            require_management(&[]).unwrap_err().reason,
            "Not management user"
        );
        for t in [
            Tag::Management,
            Tag::Policymaker,
            Tag::Monitoring,
            Tag::Administrator,
        ] {
            assert!(require_management(&[t]).is_ok(), "{t:?}");
        }
        let m = caller(&[Tag::Management]);
        assert!(!is_monitor(&m) && !is_policymaker(&m) && !is_admin(&m));
        assert_eq!(
            require_admin(&m).unwrap_err().reason,
            "Not administrator user"
        );
        assert_eq!(require_monitor(&m).unwrap_err().reason, "Not monitor user");
        let mon = caller(&[Tag::Monitoring]);
        assert!(require_monitor(&mon).is_ok() && require_admin(&mon).is_err());
        assert!(require_owner(&mon, "x", false).is_ok());
        assert!(require_owner(&mon, "x", true).is_err());
        let a = caller(&[Tag::Administrator]);
        assert!(is_monitor(&a) && is_policymaker(&a) && require_owner(&a, "x", true).is_ok());
        // Their own objects, for anyone.
        assert!(require_owner(&m, "", true).is_ok());
        assert!(visible_owner(&m, "") && !visible_owner(&m, "x") && visible_owner(&mon, "x"));
    }
}
