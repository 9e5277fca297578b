//! The Lua scripts that make every multi-key write atomic.
//!
//! Redis runs a script to the end before it serves any other command, so a script is a
//! transaction: what it reads cannot change under it, and no client ever sees it half
//! done. [`redis::Script`] calls a script by its SHA-1 (`EVALSHA`) and loads it on
//! `NOSCRIPT`, for example after Redis restarted.
//!
//! Every row is a hash with the JSON of the row in field `row`, and, as the scripts need
//! them: `exp` (the expiry, also the row's score in the expiry index), `spent` / `rotated`
//! (set once a code is spent or a refresh token rotated), `family`, `client`, `ver` (an
//! upstream row's version), and `cidx` / `fidx` / `kidx` / `tidx` / `sidx`, the index sets
//! (by client, by family, the tenant's signing keys, the tenant's consents, a user's
//! consents) that list the row, so that deleting the row can remove it from them.
//!
//! Keys known before the call are passed as `KEYS`; keys found only in the data (the
//! tokens of a family, the rows of a client, the index sets listing a row, the family of
//! a reused token) are read or built inside the script. So the scripts need every key on
//! one server: a single Redis (with replicas if wanted), not a Redis Cluster.
//!
//! Times arrive as decimal strings of seconds; Lua compares them as doubles, exact up to
//! 2^53. An empty `exp` means "never expires"; `ttl` is the key TTL in seconds, computed by
//! the store from its TTL clock.

use std::sync::LazyLock;

use redis::Script;

/// Helpers every script starts with.
macro_rules! lua {
    ($body:literal) => {
        concat!(
            r#"
-- Deletes a row and removes it from the expiry index and the index sets that list it.
-- Returns 1 if the row existed (Redis may already have expired it).
local function drop(key, expiry)
  local ix = redis.call('HMGET', key, 'cidx', 'fidx', 'kidx', 'tidx', 'sidx')
  local n = redis.call('DEL', key)
  for i = 1, 5 do
    if ix[i] then redis.call('SREM', ix[i], key) end
  end
  redis.call('ZREM', expiry, key)
  return n
end

-- Adds a key to an index set, and keeps the set alive at least as long as the key
-- (ttl '' = forever).
local function index_add(set, member, ttl)
  local cur = redis.call('TTL', set)
  redis.call('SADD', set, member)
  if ttl == '' then
    if cur >= 0 then redis.call('PERSIST', set) end
  elseif cur == -2 or (cur >= 0 and cur < tonumber(ttl)) then
    redis.call('EXPIRE', set, ttl)
  end
end

-- Gives a row its expiry: a key TTL, and its score in the expiry index.
local function set_expiry(key, expiry, exp, ttl)
  if exp == '' then
    redis.call('PERSIST', key)
    redis.call('ZREM', expiry, key)
  else
    redis.call('EXPIRE', key, ttl)
    redis.call('ZADD', expiry, exp, key)
  end
end

-- Writes a row from field/value pairs ARGV[first..], replacing any row under the key.
local function write(key, expiry, exp, ttl, first)
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(ARGV, first))
  set_expiry(key, expiry, exp, ttl)
end

-- Deletes every refresh token of a family and remembers the revocation until `till`
-- (keeping a later date already remembered). Returns how many tokens went.
local function revoke(fset, revoked, expiry, family, till, ttl)
  local n = 0
  for _, m in ipairs(redis.call('SMEMBERS', fset)) do
    if redis.call('HGET', m, 'family') == family then n = n + drop(m, expiry) end
  end
  redis.call('DEL', fset)
  local cur = redis.call('HGET', revoked, 'exp')
  if not cur or tonumber(cur) < tonumber(till) then
    redis.call('HSET', revoked, 'exp', till)
    set_expiry(revoked, expiry, till, ttl)
  end
  return n
end
"#,
            $body
        )
    };
}

/// Writes a row. KEYS: row, expiry index, index sets to list it in. ARGV: mode (`nx`:
/// refuse if the key exists, returning 0; `replace`), exp, ttl, field/value pairs.
/// Returns 1 when written.
pub(crate) static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
if ARGV[1] == 'nx' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
write(KEYS[1], KEYS[2], ARGV[2], ARGV[3], 4)
for i = 3, #KEYS do index_add(KEYS[i], KEYS[1], ARGV[3]) end
return 1
"#
    ))
});

/// Deletes a row. KEYS: row, expiry index. Returns 1 if it existed.
pub(crate) static DROP: LazyLock<Script> =
    LazyLock::new(|| Script::new(lua!("return drop(KEYS[1], KEYS[2])")));

/// Stores the first refresh token of a family. KEYS: token, expiry index, revoked-family
/// record, family set, client set. ARGV: exp, ttl, field/value pairs. Returns `revoked`,
/// `conflict` or `ok`.
pub(crate) static PUT_REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
if redis.call('EXISTS', KEYS[3]) == 1 then return 'revoked' end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'conflict' end
write(KEYS[1], KEYS[2], ARGV[1], ARGV[2], 3)
index_add(KEYS[4], KEYS[1], ARGV[2])
index_add(KEYS[5], KEYS[1], ARGV[2])
return 'ok'
"#
    ))
});

/// Redeems a code. KEYS: code. ARGV: now. Returns `{'taken', row}`,
/// `{'replayed', family, client}` or `{'missing'}`.
pub(crate) static TAKE_CODE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
local v = redis.call('HMGET', KEYS[1], 'row', 'exp', 'spent', 'family', 'client')
if not v[1] or tonumber(ARGV[1]) >= tonumber(v[2]) then return {'missing'} end
if v[3] then return {'replayed', v[4] or '', v[5] or ''} end
redis.call('HSET', KEYS[1], 'spent', '1')
return {'taken', v[1]}
"#
    ))
});

/// Redeems a code and stores the first refresh token of its family: `TAKE_CODE` and
/// `PUT_REFRESH` as one step. The token row was built by the store from the code row it
/// read just before; the code is taken only if its row is still that one, byte for byte,
/// so the token always matches the code it is stored with. KEYS: code, token, expiry
/// index, revoked-family record, family set, client set. ARGV: now, the code row the
/// token was built from, token exp, token ttl, token field/value pairs. Returns
/// `{'taken'}`, `{'replayed', family, client}`, `{'missing'}`, `{'changed'}` (the code
/// row is not the one given; nothing changed), `{'revoked'}` or `{'conflict'}` (the token
/// cannot be stored; nothing changed, the code stays unspent).
pub(crate) static REDEEM_CODE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
local v = redis.call('HMGET', KEYS[1], 'row', 'exp', 'spent', 'family', 'client')
if not v[1] or tonumber(ARGV[1]) >= tonumber(v[2]) then return {'missing'} end
if v[3] then return {'replayed', v[4] or '', v[5] or ''} end
if v[1] ~= ARGV[2] then return {'changed'} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {'revoked'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'conflict'} end
redis.call('HSET', KEYS[1], 'spent', '1')
write(KEYS[2], KEYS[3], ARGV[3], ARGV[4], 5)
index_add(KEYS[5], KEYS[2], ARGV[4])
index_add(KEYS[6], KEYS[2], ARGV[4])
return {'taken'}
"#
    ))
});

/// Rotates a refresh token. KEYS: old token, new token, expiry index, new token's family
/// set, new token's client set. ARGV: now, tenant key base, whether the new row names the
/// call's tenant (`1`), new family, new client, revocation remembered until, its ttl, new
/// exp, new ttl, new field/value pairs. Returns `{'rotated', old row}`,
/// `{'reused', family}`, `{'invalid'}`, `{'bad', old row}` (the successor does not fit;
/// nothing changed) or `{'conflict'}`.
pub(crate) static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
local v = redis.call('HMGET', KEYS[1], 'row', 'exp', 'rotated', 'family', 'client')
if not v[1] or tonumber(ARGV[1]) >= tonumber(v[2]) then return {'invalid'} end
if v[3] then
  -- RFC 9700 section 4.14.2: a rotated token came back; the whole family goes.
  local family = v[4] or ''
  revoke(ARGV[2] .. 'family:' .. family, ARGV[2] .. 'revoked:' .. family, KEYS[3],
    family, ARGV[6], ARGV[7])
  return {'reused', family}
end
if ARGV[3] ~= '1' or v[4] ~= ARGV[4] or v[5] ~= ARGV[5] or KEYS[1] == KEYS[2] then
  return {'bad', v[1]}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'conflict'} end
redis.call('HSET', KEYS[1], 'rotated', '1')
write(KEYS[2], KEYS[3], ARGV[8], ARGV[9], 10)
index_add(KEYS[4], KEYS[2], ARGV[9])
index_add(KEYS[5], KEYS[2], ARGV[9])
return {'rotated', v[1]}
"#
    ))
});

/// Revokes a family. KEYS: family set, revoked-family record, expiry index. ARGV: family,
/// remembered until, its ttl. Returns how many tokens went.
pub(crate) static REVOKE_FAMILY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        "return revoke(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])"
    ))
});

/// Claims a key once (`Store::claim_once`): a live claim (its `exp` after now) is left
/// alone, otherwise the key is claimed until the new expiry. KEYS: claim, expiry index.
/// ARGV: now, exp, ttl. Returns 1 if claimed. `exp` is compared rather than relying on the
/// key's TTL alone, so the answer follows the caller's `now` like the other backends.
pub(crate) static CLAIM_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
local cur = redis.call('HGET', KEYS[1], 'exp')
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'exp', ARGV[2])
set_expiry(KEYS[1], KEYS[2], ARGV[2], ARGV[3])
return 1
"#
    ))
});

/// Records an access token revocation, keeping the later expiry. KEYS: record, expiry
/// index. ARGV: exp, ttl.
pub(crate) static REVOKE_ACCESS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
local cur = redis.call('HGET', KEYS[1], 'exp')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'exp', ARGV[1])
set_expiry(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
return 1
"#
    ))
});

/// Retires a signing key. KEYS: key, expiry index, the tenant's key set. ARGV: not_after,
/// ttl. Returns 1 if the key exists.
pub(crate) static RETIRE_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'exp', ARGV[1])
set_expiry(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
index_add(KEYS[3], KEYS[1], ARGV[2])
return 1
"#
    ))
});

/// Lists a tenant's signing keys. KEYS: the key set. Returns `row, not_after` pairs
/// (`not_after` empty while active).
pub(crate) static LIST_KEYS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('HMGET', m, 'row', 'exp')
  if v[1] then
    out[#out + 1] = v[1]
    out[#out + 1] = v[2] or ''
  end
end
return out
"#,
    )
});

/// Takes a pending request. KEYS: request, expiry index. ARGV: now. Returns the row, or
/// nil when missing or expired (an expired one is deleted too).
pub(crate) static TAKE_PENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
local v = redis.call('HMGET', KEYS[1], 'row', 'exp')
if not v[1] then return false end
drop(KEYS[1], KEYS[2])
if tonumber(ARGV[1]) >= tonumber(v[2]) then return false end
return v[1]
"#
    ))
});

/// Deletes a client and what was issued to it. KEYS: client, client set, expiry index.
/// ARGV: client ID. Returns 1 if the client existed.
pub(crate) static DELETE_CLIENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
local existed = drop(KEYS[1], KEYS[3])
for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  -- The set may list a key since reused for another client: check the owner.
  if redis.call('HGET', m, 'client') == ARGV[1] then drop(m, KEYS[3]) end
end
redis.call('DEL', KEYS[2])
return existed
"#
    ))
});

/// Deletes up to ARGV[2] rows whose expiry is at or before ARGV[1]. KEYS: expiry index.
/// Returns `{rows deleted, index entries handled}`.
pub(crate) static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local n = 0
for _, m in ipairs(due) do n = n + drop(m, KEYS[1]) end
return {n, #due}
"#
    ))
});

/// Lists the rows of the keys in a set (the consents of a tenant or of a user). KEYS: the
/// set. Returns the `row` fields of the members that exist.
pub(crate) static LIST_ROWS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local row = redis.call('HGET', m, 'row')
  if row then out[#out + 1] = row end
end
return out
"#,
    )
});

/// Revokes every family a user holds for a client, each as `REVOKE_FAMILY` does, and
/// deletes the user's codes for the client that are not spent and not expired, revoking
/// their families too. KEYS: the client set, expiry index. ARGV: tenant key base, client ID,
/// subject, remembered until, its ttl, now. Returns the families revoked, each once.
pub(crate) static REVOKE_CLIENT_GRANTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
local base = ARGV[1]
local prefix = base .. 'refresh:'
local code_prefix = base .. 'code:'
local seen, families = {}, {}
local function add(family)
  if not seen[family] then
    seen[family] = true
    families[#families + 1] = family
  end
end
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  -- The client set also lists pending requests and consents, and may list a key since
  -- reused for another client: only the client's refresh tokens, current or rotated, and
  -- unspent live codes, of the user (the subject is only in the row's JSON).
  if string.sub(m, 1, #prefix) == prefix then
    local v = redis.call('HMGET', m, 'row', 'family', 'client')
    if v[1] and v[2] and v[3] == ARGV[2] and cjson.decode(v[1])['subject'] == ARGV[3] then
      add(v[2])
    end
  elseif string.sub(m, 1, #code_prefix) == code_prefix then
    local v = redis.call('HMGET', m, 'row', 'family', 'client', 'spent', 'exp')
    if v[1] and v[2] and v[3] == ARGV[2] and not v[4] and v[5]
        and tonumber(ARGV[6]) < tonumber(v[5])
        and cjson.decode(v[1])['subject'] == ARGV[3] then
      drop(m, KEYS[2])
      add(v[2])
    end
  end
end
for _, family in ipairs(families) do
  revoke(base .. 'family:' .. family, base .. 'revoked:' .. family, KEYS[2], family,
    ARGV[4], ARGV[5])
end
return families
"#
    ))
});

/// Replaces an upstream row if its version is the expected one. KEYS: row, expiry index.
/// ARGV: expected version, exp, ttl, field/value pairs (`ver` among them). Versions are
/// compared as the decimal strings the store writes, exact for any `u64`. Returns 1 when
/// swapped.
pub(crate) static SWAP_UPSTREAM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
if redis.call('HGET', KEYS[1], 'ver') ~= ARGV[1] then return 0 end
write(KEYS[1], KEYS[2], ARGV[2], ARGV[3], 4)
return 1
"#
    ))
});

/// Deletes a row and returns it, expired or not. KEYS: row, expiry index. Returns the
/// `row` field, or nil when there was none.
pub(crate) static TAKE_ROW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
local row = redis.call('HGET', KEYS[1], 'row')
if not row then return false end
drop(KEYS[1], KEYS[2])
return row
"#
    ))
});

/// Stores a device authorization and the pointer from its user code. KEYS: device row,
/// user code pointer, expiry index, client set. ARGV: created_at, exp, ttl, row JSON,
/// client ID, status, interval. A user code held by an unexpired request (at `created_at`)
/// refuses; one held by an expired request is taken over and that request dropped.
/// Returns `conflict` or `ok`.
pub(crate) static PUT_DEVICE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 'conflict' end
local held = redis.call('HGET', KEYS[2], 'dev')
if held then
  local hexp = redis.call('HGET', held, 'exp')
  if hexp then
    if tonumber(ARGV[1]) < tonumber(hexp) then return 'conflict' end
    drop(held, KEYS[3])
  end
end
redis.call('HSET', KEYS[1], 'row', ARGV[4], 'exp', ARGV[2], 'client', ARGV[5],
  'cidx', KEYS[4], 'status', ARGV[6], 'interval', ARGV[7])
set_expiry(KEYS[1], KEYS[3], ARGV[2], ARGV[3])
index_add(KEYS[4], KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'dev', KEYS[1], 'client', ARGV[5], 'cidx', KEYS[4])
redis.call('EXPIRE', KEYS[2], ARGV[3])
index_add(KEYS[4], KEYS[2], ARGV[3])
return 'ok'
"#
    ))
});

/// The device authorization a user code points to, unless expired. KEYS: user code
/// pointer. ARGV: now. Returns `{row, status, subject, granted, interval, last}` (absent
/// fields nil), or nil.
pub(crate) static DEVICE_BY_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local dev = redis.call('HGET', KEYS[1], 'dev')
if not dev then return false end
local v = redis.call('HMGET', dev, 'row', 'exp', 'status', 'subject', 'granted', 'interval',
  'last')
if not v[1] or tonumber(ARGV[1]) >= tonumber(v[2]) then return false end
return {v[1], v[3], v[4], v[5], v[6], v[7]}
"#,
    )
});

/// Records a decision on a pending, unexpired device authorization. KEYS: device row.
/// ARGV: now, `approved` or `denied`, subject, granted scope. Returns 1 when recorded.
pub(crate) static DECIDE_DEVICE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('HMGET', KEYS[1], 'exp', 'status')
if not v[1] or v[2] ~= 'pending' or tonumber(ARGV[1]) >= tonumber(v[1]) then return 0 end
if ARGV[2] == 'approved' then
  redis.call('HSET', KEYS[1], 'status', 'approved', 'subject', ARGV[3], 'granted', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'status', 'denied')
end
return 1
"#,
    )
});

/// One poll of a device authorization (RFC 8628 §3.5), as `device_poll_step` of the server
/// crate decides it. KEYS: device row. ARGV: now, client ID, slow-down step. Returns
/// `{'missing'}`, `{'wrong_client'}`, `{'expired'}`, `{'pending', interval}`,
/// `{'slow_down', interval}`, `{'denied'}`, `{'consumed'}`, or, to the one poll that
/// consumes an approval, `{'approved', row, status, subject, granted, interval, last}`
/// (as they were before the poll).
pub(crate) static POLL_DEVICE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('HMGET', KEYS[1], 'row', 'exp', 'client', 'status', 'subject',
  'granted', 'interval', 'last')
if not v[1] then return {'missing'} end
if v[3] ~= ARGV[2] then return {'wrong_client'} end
local now = tonumber(ARGV[1])
if now >= tonumber(v[2]) then return {'expired'} end
local status = v[4]
if status == 'pending' then
  local interval = tonumber(v[7])
  if v[8] and now < tonumber(v[8]) + interval then
    interval = interval + tonumber(ARGV[3])
    redis.call('HSET', KEYS[1], 'interval', string.format('%d', interval), 'last', ARGV[1])
    return {'slow_down', string.format('%d', interval)}
  end
  redis.call('HSET', KEYS[1], 'last', ARGV[1])
  return {'pending', v[7]}
elseif status == 'approved' then
  redis.call('HSET', KEYS[1], 'status', 'consumed', 'last', ARGV[1])
  return {'approved', v[1], v[4], v[5], v[6], v[7], v[8]}
elseif status == 'denied' then
  return {'denied'}
end
return {'consumed'}
"#,
    )
});
