"""Every error a user can see, defined once: code, HTTP status and message.

Routes and commands never write messages inline; they raise :class:`KbaiError` with one of the
specs below, and the web layer renders ``{"error": {"code", "message"}}`` while the CLI prints
the message on one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorSpec:
    code: str
    status: int
    template: str


class KbaiError(Exception):
    """A failure that is the caller's to fix. ``str(err)`` is safe to show: it never holds a token."""

    def __init__(self, spec: ErrorSpec, **params: Any) -> None:
        from kbai.tokenformat import redact  # messages may quote user input, which may hold a token

        self.spec = spec
        self.params = params
        self.message = redact(spec.template.format(**params))
        super().__init__(self.message)

    @property
    def code(self) -> str:
        return self.spec.code

    @property
    def status(self) -> int:
        return self.spec.status


# 400 / 401 / 403
BAD_REQUEST = ErrorSpec("bad_request", 400, "{detail}")
NOT_AUTHENTICATED = ErrorSpec(
    "not_authenticated", 401, "Log in first: send the session cookie, or an Authorization: Bearer token."
)
INVALID_CREDENTIALS = ErrorSpec("invalid_credentials", 401, "Wrong email or password.")
INVALID_TOKEN = ErrorSpec("invalid_token", 401, "{description}")
INVALID_CLIENT = ErrorSpec(
    "invalid_client", 401, "Unknown or wrong service credential. Create one with `kbai service-credential create NAME`."
)
INSUFFICIENT_SCOPE = ErrorSpec("insufficient_scope", 403, "{description}")
FORBIDDEN = ErrorSpec("forbidden", 403, "You need the {permission} permission to {action}.")
NO_TOKEN_PERMISSION = ErrorSpec(
    "forbidden",
    403,
    "You need the developer.manage_tokens permission to create tokens. Ask a tenant admin to grant "
    "Manage API Tokens (Developer) on one of your roles.",
)
CSRF_FAILED = ErrorSpec(
    "csrf_failed", 403, "Missing or wrong X-CSRF-Token header. Send the csrf_token returned by POST /api/v1/session."
)
FORM_EXPIRED = ErrorSpec(
    "csrf_failed", 403, "This form has expired or did not come from this page. Go back, reload the page and try again."
)
SESSION_REQUIRED = ErrorSpec(
    "session_required", 403, "Token management needs an interactive session: a token cannot {action}."
)
OPERATORS_ONLY = ErrorSpec(
    "forbidden",
    403,
    "Service credentials belong to the whole deployment: only its operators manage them (the kbai CLI, or an "
    "admin of the operator tenant named by KBAI_OPERATOR_TENANT, with a session).",
)
USER_INACTIVE = ErrorSpec("user_inactive", 403, "This account is deactivated. Ask a tenant admin to reactivate it.")
MANAGE_NEEDS_SESSION = ErrorSpec(
    "session_required",
    403,
    "An API token cannot {action}: changing users and roles needs an interactive session, so that access "
    "given away never outlives a revoked token. Sign in to System Settings, or ask an operator to use the kbai CLI.",
)
# Nobody but an operator gives, takes away or hands out a permission they don't hold themselves, or changes
# the access of someone who holds more than they do (GitHub and GitLab behave so).
ROLE_ADD_NOT_HELD = ErrorSpec(
    "permission_not_held",
    403,
    "You can't give a role {permissions}: you don't hold {them} yourself, and only someone who holds a "
    "permission can give it. Ask a tenant admin.",
)
ROLE_REMOVE_NOT_HELD = ErrorSpec(
    "permission_not_held",
    403,
    "You can't take {permissions} off the {role} role: you don't hold {them} yourself, and only someone who "
    "holds a permission can take it away. Ask a tenant admin.",
)
ROLE_HOLDER_OUTRANKS = ErrorSpec(
    "permission_not_held",
    403,
    "You can't take {permissions} off the {role} role: someone who has this role holds permissions you don't "
    "and would lose {them}. Ask a tenant admin.",
)
ROLE_NOT_ASSIGNABLE = ErrorSpec(
    "permission_not_held",
    403,
    "You can't give anyone the {role} role: it grants {permissions}, which you don't hold yourself. "
    "Ask a tenant admin.",
)
USER_OUTRANKS = ErrorSpec(
    "permission_not_held",
    403,
    "You can't {action} {email}: they hold {permissions}, which you don't, and only someone who holds at least "
    "what they hold can change their access. Ask a tenant admin.",
)

# 404 / 409
NOT_FOUND = ErrorSpec("not_found", 404, "{what} not found.")
NOT_UNDER_PREFIX = ErrorSpec(
    "not_found",
    404,
    "Not found: kbai is served under {prefix}/ (KBAI_PUBLIC_URL); put {prefix} in front of this "
    "path. Only /healthz, /livez, /readyz and /metrics also answer at the root.",
)
LIMIT_REACHED = ErrorSpec(
    "token_limit_reached",
    409,
    "You have {active} active tokens; the limit is {limit}. Revoke one before creating a new one. "
    "Need more? Email {support}.",
)
NO_SERVICE_TOKEN_PERMISSION = ErrorSpec(
    "forbidden",
    403,
    "You need the developer.manage_service_tokens permission to {action}. Ask a tenant admin to grant "
    "Manage service tokens (Developer) on one of your roles.",
)
SERVICE_LIMIT_REACHED = ErrorSpec(
    "service_token_limit_reached",
    409,
    "The tenant has {active} active service tokens; the limit is {limit}. Revoke one first. Need more? Email {support}.",
)
HAND_OVER_LIMIT = ErrorSpec(
    "service_token_limit_reached",
    409,
    "Handing over {count} token(s) would give the tenant {total} active service tokens; the limit is {limit}. "
    "Nothing was changed: hand over fewer, or revoke service tokens first.",
)
HAND_OVER_NOT_ACTIVE = ErrorSpec(
    "not_handed_over",
    409,
    "Token {token_id} is not an active token of this user, so it cannot be kept as a service token. "
    "Nothing was changed.",
)
SERVICE_NAME_TAKEN = ErrorSpec(
    "name_taken", 409, "The tenant already has an active service token named '{name}'. Pick another name."
)
SERVICE_TOKEN_NOT_PERSONAL = ErrorSpec(
    "service_token",
    403,
    "A service token belongs to the tenant, not a person: it cannot {action}.",
)
CEILING_UNHELD = ErrorSpec(
    "forbidden",
    403,
    "You cannot allow service tokens '{scope}': you don't hold that permission yourself.",
)
NAME_TAKEN = ErrorSpec(
    "name_taken", 409, "You already have an active token named '{name}'. Pick another name or revoke that token."
)
LAST_ADMIN = ErrorSpec(
    "last_admin",
    409,
    "This would leave the tenant without an active admin. Give the Admin role to another active user first.",
)
CREDENTIAL_LACKS_ABILITY = ErrorSpec(
    "forbidden",
    403,
    "This service credential may not {action}. An operator can issue one that may: "
    "`kbai service-credential create NAME --allow {ability}`.",
)
BUILTIN_ROLE_KEPT = ErrorSpec(
    "builtin_role", 409, "The built-in role {role} cannot be deleted: every tenant keeps its Admin and Member roles."
)
SCIM_CREDENTIAL_NEEDS_ALL = ErrorSpec(
    "forbidden",
    403,
    "Only a member who holds every permission of this tenant (an Admin) may manage its SCIM provisioning "
    "credentials, or an operator with `kbai scim-token create --tenant NAME`.",
)
ALREADY_EXISTS = ErrorSpec("already_exists", 409, "{what} already exists.")
NOT_ROTATABLE = ErrorSpec("not_rotatable", 409, "Only an active token can be rotated; this one is {status}.")
NOT_PAUSABLE = ErrorSpec("not_pausable", 409, "Only an active token can be paused; this one is {status}.")
NOT_EDITABLE = ErrorSpec(
    "not_editable",
    409,
    "Only an active or paused token can be changed; this one is {status}.",
)
NOT_RESUMABLE = ErrorSpec(
    "not_resumable",
    409,
    "Only a paused token can be resumed; this one is {status}.{advice}",
)
ALREADY_ROTATED = ErrorSpec(
    "already_rotated",
    409,
    "This token was already rotated: its successor is token {successor_id}. Rotate or revoke that one instead.",
)

# ---- Idempotency-Key (retried creates) --------------------------------------------------------
IDEMPOTENCY_KEY_INVALID = ErrorSpec(
    "invalid_idempotency_key",
    400,
    "Idempotency-Key must be one header of 1 to 255 printable ASCII characters, e.g. a UUID.",
)
IDEMPOTENCY_IN_PROGRESS = ErrorSpec(
    "idempotency_in_progress",
    409,
    "A request with this Idempotency-Key is still being processed. Retry in a moment to get its answer.",
)
IDEMPOTENCY_KEY_REUSED = ErrorSpec(
    "idempotency_key_reused",
    422,
    "This Idempotency-Key was used for a different request in the last 24 hours. Send a new key for a new request.",
)

# 413 / 415 / 422 / 429
TOO_LARGE = ErrorSpec("too_large", 413, "The request body is larger than {limit} bytes.")
UNSUPPORTED_MEDIA = ErrorSpec("unsupported_media_type", 415, "Send the body as {expected}.")
VALIDATION = ErrorSpec("validation_error", 422, "{detail}")
UNKNOWN_SCOPE = ErrorSpec(
    "unknown_scope", 422, "Unknown scope '{scope}'. GET /api/v1/permissions lists the scopes that exist."
)
UNHELD_SCOPE = ErrorSpec(
    "unheld_scope", 422, "You don't hold the '{scope}' permission, so a token you create can't have it."
)
SESSION_ONLY_SCOPE = ErrorSpec(
    "session_only_scope",
    422,
    "'{scope}' ({label}) needs an interactive session, so a token can't have it. "
    "GET /api/v1/permissions marks the permissions a token can use.",
)
DUPLICATE_SCOPE = ErrorSpec("duplicate_scope", 422, "Scope '{scope}' is listed more than once.")
UNKNOWN_PERMISSION = ErrorSpec(
    "unknown_permission", 422, "Unknown permission '{permission}'. GET /api/v1/permissions lists them."
)
ADMIN_ROLE_FIXED = ErrorSpec(
    "builtin_role", 422, "The built-in {role} role cannot be renamed, and Admin always keeps every permission."
)
INVALID_CIDR = ErrorSpec(
    "invalid_cidr",
    422,
    "'{value}' in allowed_ips is not an IP address or CIDR range; write it like 203.0.113.0/24 or 2001:db8::/32.",
)
FIELD_RATE_LIMIT = ErrorSpec(
    "validation_error",
    422,
    "Write the rate limit as a whole number of requests from 1 to 1,000,000,000, or leave it empty for no limit.",
)
FIELD_QUOTA = ErrorSpec(
    "validation_error",
    422,
    "Write the quota as a whole number of requests from 0 to 2,000,000,000, or leave it empty for no quota.",
)
INVALID_RATE_LIMIT = ErrorSpec(
    "validation_error",
    422,
    'rate_limit must be {{"requests": N, "per": "second" | "minute" | "hour"}} with N from 1 to {max}, or null '
    "for no limit.",
)
INVALID_QUOTA = ErrorSpec(
    "validation_error",
    422,
    'quota must be {{"remaining": N, "refill": {{"amount": N, "interval": "day" | "month"}} or null}} with N from '
    "{min} to {max}, or null for no quota.",
)
SCOPES_ONLY_SHRINK = ErrorSpec(
    "scopes_only_shrink",
    422,
    "A token's scopes can only shrink: '{scope}' is not one of its scopes. Create a new token for more access.",
)
EXPIRY_ONLY_SHORTER = ErrorSpec(
    "expiry_only_shorter",
    422,
    "A token's expiry can only be brought forward (it now expires {current}). Create a new token for a longer one.",
)
SELF_ROTATE_NEEDS_TOKEN = ErrorSpec(
    "token_required",
    403,
    "POST /api/v1/tokens/self/rotate is for a token rotating itself: send it as Authorization: Bearer. With a "
    "session, rotate a token with POST /api/v1/tokens/{{id}}/rotate.",
)
SELF_ROTATE_NOT_ENABLED = ErrorSpec(
    "self_rotate_not_enabled",
    403,
    "This token was not created with the self_rotate option, so it cannot rotate itself. Rotate it under "
    "System Settings > API Keys, or create a token with self_rotate for automation.",
)
RATE_LIMITED = ErrorSpec(
    "rate_limited", 429, "Too many failed attempts from your address. Try again in {retry_after} seconds."
)
# A token's own limits (rate_limit, quota): the token is good, it has used what it may for now.
TOKEN_RATE_LIMITED = ErrorSpec(
    "rate_limited",
    429,
    "This token is over its rate limit of {limit}. Try again in {retry_after} seconds, or ask its owner to raise "
    "the limit under System Settings > API Keys.",
)
QUOTA_EXHAUSTED = ErrorSpec(
    "quota_exhausted",
    429,
    "This token has used its whole quota{until}. Its owner can add more under System Settings > API Keys.",
)
LOGIN_RATE_LIMITED = ErrorSpec(
    "rate_limited", 429, "Too many failed logins from your address. Try again in {retry_after} seconds."
)
LOGIN_ACCOUNT_THROTTLED = ErrorSpec(
    "rate_limited",
    429,
    "Too many failed logins for this email from addresses it does not usually sign in from, so each such "
    "address waits between attempts. Try again in {retry_after} seconds.",
)
CLIENT_RATE_LIMITED = ErrorSpec(
    "rate_limited",
    429,
    "Too many failed service-credential authentications from your address. Try again in {retry_after} seconds.",
)

# 503
DATABASE_UNAVAILABLE = ErrorSpec(
    "service_unavailable", 503, "The database cannot be reached right now. Try again in a few seconds."
)


# ---- kbai.sdk (other services protected by kbai tokens) ------------------------------------------
NO_BEARER_TOKEN = ErrorSpec("not_authenticated", 401, "Send an API token: Authorization: Bearer kbai_pk_...")
# RFC 7662 answers a bad token with {"active": false} alone, so a remote check cannot say why.
TOKEN_INACTIVE = ErrorSpec(
    "invalid_token",
    401,
    "The token is not active: it is unknown, paused, revoked or expired, or its owner was deactivated.",
)
AUTH_UNAVAILABLE = ErrorSpec(
    "auth_unavailable",
    503,
    "Token verification is unavailable right now, so the request was refused. Try again shortly.",
)


# ---- verification outcomes -> public errors (the one place that maps them) ----------------------
_OUTCOME_DESCRIPTIONS = {
    "malformed": "The token is malformed: expected kbai_pk_ followed by 64 lowercase hex characters.",
    "unknown": "The token is not recognised.",
    "revoked": "The token has been revoked.",
    "expired": "The token has expired. Create a new one under System Settings > API Keys.",
    "owner_inactive": "The token's owner has been deactivated.",
    "paused": "The token is paused. Its owner or an admin can resume it under System Settings > API Keys.",
    # Never the list itself: a caller outside it learns only that its address is not allowed.
    "ip_not_allowed": "The token cannot be used from this address. Its owner can change where it may be "
    "used under System Settings > API Keys.",
}


def insufficient_scope(missing: tuple[str, ...] | list[str]) -> KbaiError:
    """403 for a token that lacks scopes; ``params["scope"]`` feeds the RFC 6750 ``scope=`` attribute."""
    return KbaiError(
        INSUFFICIENT_SCOPE, description=f"The token lacks the scope(s): {', '.join(missing)}.", scope=" ".join(missing)
    )


def for_outcome(outcome: str, missing: tuple[str, ...] = ()) -> KbaiError:
    """The public error for a failed verification outcome (see ``kbai.tokens.verify.Outcome``)."""
    if outcome == "insufficient_scope":
        return insufficient_scope(missing)
    return KbaiError(INVALID_TOKEN, description=_OUTCOME_DESCRIPTIONS[outcome])


# ---- leak response (secret-scanning reports, public revocation) -------------------------------
SIGNATURE_MISSING = ErrorSpec(
    "invalid_signature",
    401,
    "Send the Github-Public-Key-Identifier and Github-Public-Key-Signature headers of GitHub secret scanning.",
)
SIGNATURE_KEY_UNKNOWN = ErrorSpec(
    "invalid_signature",
    401,
    "Unknown Github-Public-Key-Identifier: no such key in this server's secret-scanning keys.",
)
SIGNATURE_INVALID = ErrorSpec(
    "invalid_signature",
    401,
    "The Github-Public-Key-Signature does not verify against the request body.",
)
LEAK_REPORT_INVALID = ErrorSpec(
    "validation_error",
    422,
    "The body must be a JSON array of at most {limit} objects like "
    '{{"token": "...", "type": "...", "url": "...", "source": "..."}}: {detail}.',
)
REVOCATION_INVALID = ErrorSpec(
    "validation_error",
    422,
    'The body must be a JSON object {{"credentials": ["kbai_pk_...", ...]}} with 1 to {limit} strings: {detail}.',
)
REVOCATION_RATE_LIMITED = ErrorSpec(
    "rate_limited", 429, "Too many revocation requests from your address. Try again in {retry_after} seconds."
)


# ---- token lifecycle: tenant policies, webhooks, inventory ------------------------------------
POLICY_EXPIRATION_REQUIRED = ErrorSpec(
    "policy_expiration_required",
    422,
    "Your organisation requires every token to expire: pick an expiration date{within}.{advice}",
)
POLICY_ALLOWLIST_REQUIRED = ErrorSpec(
    "policy_allowlist_required",
    422,
    "Your organisation requires every new token to carry an IP allowlist: give allowed_ips (CIDR ranges such "
    "as 203.0.113.0/24).",
)
POLICY_MAX_LIFETIME = ErrorSpec(
    "policy_max_lifetime",
    422,
    "Your organisation allows tokens of at most {days} days.{advice}",
)
WEBHOOK_URL_INVALID = ErrorSpec(
    "validation_error",
    422,
    "webhook_url must be an http:// or https:// URL with a host, at most 2000 characters (or null to remove it).",
)
WEBHOOK_URL_REFUSED = ErrorSpec(
    "webhook_url_refused",
    422,
    "webhook_url is refused: {reason}. kbai sends webhooks to public internet addresses only (an operator can "
    "allow an internal receiver with KBAI_WEBHOOK_ALLOWED_NETWORKS).",
)
ENCRYPTION_KEY_REQUIRED = ErrorSpec(
    "encryption_key_required",
    409,
    "kbai keeps webhook signing secrets only encrypted, and no encryption key is set: the operator must set "
    "KBAI_ENCRYPTION_KEY (the same on every instance and worker) before a webhook can be set up.",
)
ENCRYPTION_KEY_WRONG = ErrorSpec(
    "encryption_key_wrong",
    409,
    "A stored webhook signing secret cannot be decrypted with the configured KBAI_ENCRYPTION_KEY: set the key "
    "it was encrypted with (comma-separated after the new one while rotating), or make a new webhook secret.",
)


# ---- the pages' own words for form fields (shown under the field; the API keeps its messages above) ----
FIELD_TOKEN_NAME_EMPTY = ErrorSpec(
    "validation_error",
    422,
    "Give the token a name, for example “Zapier production”, so you can tell it apart later.",
)
FIELD_NAME_TOO_LONG = ErrorSpec(
    "validation_error",
    422,
    "That name is {length} characters long. Keep it to {limit} characters or fewer.",
)
FIELD_TOKEN_NAME_TAKEN = ErrorSpec(
    "name_taken",
    409,
    "You already have an active token called “{name}”. Choose another name, or revoke that token first.",
)
FIELD_SCOPES_NONE = ErrorSpec(
    "validation_error",
    422,
    "Pick at least one scope, or choose “Identity only” if the token should only show who you are.",
)
FIELD_SERVICE_SCOPES_NONE = ErrorSpec(
    "validation_error",
    422,
    "Pick at least one scope: a service token can do only what its scopes allow, and it has no person to show.",
)
FIELD_EXPIRY_DATE_MISSING = ErrorSpec(
    "validation_error",
    422,
    "Pick a date for the custom expiration, or choose one of the other options.",
)
FIELD_EXPIRY_DATE_PAST = ErrorSpec("validation_error", 422, "Pick an expiration date after today.")
FIELD_EXPIRY_CHOICE = ErrorSpec("validation_error", 422, "Choose when the token expires.")
FIELD_ROLE_NAME_EMPTY = ErrorSpec("validation_error", 422, "Give the role a name, for example “Developers”.")
FIELD_ROLE_NAME_TAKEN = ErrorSpec(
    "already_exists",
    409,
    "There is already a role called “{name}”. Choose another name.",
)
FIELD_EMAIL_INVALID = ErrorSpec("validation_error", 422, "Enter an email address like name@company.com.")
FIELD_EMAIL_TAKEN = ErrorSpec("already_exists", 409, "{email} is already a member of this tenant.")
FIELD_PASSWORD_LENGTH = ErrorSpec(
    "validation_error",
    422,
    "The password needs at least {min} characters. Or leave it blank, and we generate one and show it once.",
)
FIELD_EXPIRY_DATE_TOO_FAR = ErrorSpec(
    "validation_error",
    422,
    "Pick a date at most {days} days from today.",
)


# ---- sign-in with the host product's OpenID provider (kbai.identity) ---------------------------
# Each ends on an error page with a way back to the login page; none opens a session or creates anything.
PASSWORD_LOGIN_DISABLED = ErrorSpec(
    "password_login_disabled",
    403,
    "Logging in with a password is turned off on this server.{advice}",
)
OIDC_NOT_CONFIGURED = ErrorSpec(
    "oidc_not_configured",
    404,
    "Single sign-on is not set up on this server. Log in with your email and password.",
)
OIDC_STATE_MISMATCH = ErrorSpec(
    "oidc_state_mismatch",
    400,
    "This sign-in did not start in this browser, was already finished, or took longer than {minutes} minutes. "
    "Start again from the login page.",
)
OIDC_PROVIDER_REFUSED = ErrorSpec(
    "oidc_provider_refused",
    401,
    "{provider} did not sign you in ({reason}). Start again from the login page.",
)
OIDC_CODE_REJECTED = ErrorSpec(
    "oidc_code_rejected",
    401,
    "{provider} did not accept this sign-in (the code was already used, has expired, or belongs to another "
    "sign-in). Start again from the login page.",
)
OIDC_ID_TOKEN_INVALID = ErrorSpec(
    "oidc_id_token_invalid",
    401,
    "The ID token from {provider} was refused: {reason}. Start again from the login page.",
)
OIDC_UNKNOWN_KEY = ErrorSpec(
    "oidc_unknown_key",
    401,
    "The ID token from {provider} is signed with a key that {provider} does not publish, so it was refused. "
    "Start again from the login page.",
)
OIDC_PROVIDER_UNREACHABLE = ErrorSpec(
    "oidc_provider_unreachable",
    502,
    "{provider} cannot be reached right now, so you cannot sign in with it. Try again in a minute.",
)
OIDC_CLAIM_MISSING = ErrorSpec(
    "oidc_claim_missing",
    403,
    "Your sign-in does not say {what} (the '{claim}' claim), so you cannot be let in. "
    "Ask your administrator to add it.",
)
OIDC_TENANT_UNKNOWN = ErrorSpec(
    "oidc_tenant_unknown",
    403,
    "Your organisation ({org}) has no workspace here yet. Ask your administrator to set it up.",
)
OIDC_EMAIL_UNVERIFIED = ErrorSpec(
    "oidc_email_unverified",
    409,
    "An account with the email {email} exists here, but your sign-in does not confirm that the address is "
    "yours (email_verified), so it was not linked. Ask your administrator.",
)
OIDC_ALREADY_LINKED = ErrorSpec(
    "oidc_already_linked",
    409,
    "The account {email} is already linked to another sign-in at this provider, so it was not linked again. "
    "Ask your administrator.",
)
PERSON_HAS_PASSWORD = ErrorSpec(
    "person_has_password",
    409,
    "{email} already has an account and logs in with their own password: leave the "
    "password out. To reset it, use `kbai user set-password --email {email}`.",
)
MEMBERSHIP_AMBIGUOUS = ErrorSpec(
    "membership_ambiguous",
    422,
    "{email} is a member of several tenants ({tenants}): say which one with --tenant NAME.",
)
NO_PASSWORD_FOR_MEMBERS = ErrorSpec(
    "validation_error",
    422,
    "A new member's password is not set here: they get a one-time invitation link and choose it themselves.",
)
INVITATION_NEEDS_SSO = ErrorSpec(
    "invitation_needs_sso",
    409,
    "You already have an account here that signs in with single sign-on: sign in with it to join.",
)
INVITATION_INVALID = ErrorSpec(
    "invitation_invalid",
    404,
    "This invitation link is not valid: it was used already, it expired (links last 72 hours), or it was "
    "mistyped. Ask the admin who invited you for a new one.",
)
NOT_A_MEMBER = ErrorSpec(
    "not_a_member",
    404,
    "You are not an active member of that tenant. Pick one of your tenants (GET /api/v1/session/tenants lists them).",
)
ASK_NOT_FOR_TOKENS = ErrorSpec(
    "validation_error",
    422,
    "From API Keys you can ask for Manage API Tokens or for a permission a token can use; '{permission}' is "
    "neither. Ask your admin directly for it.",
)
