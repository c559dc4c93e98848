import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, DEV_SECRETS_FILE, loadConfig, loadDevSecrets } from '../../src/config/index.js';

const strong = 'q7Vd9Zk2mP4xW8rT1yL6nB3cH5jF0gSaE2uR';
const production = {
  NODE_ENV: 'production',
  PUSHRELAY_KEYS: `app:${strong}`,
  PUSHRELAY_JWT_SECRET: strong,
  PUSHRELAY_CORS_ORIGINS: 'https://app.example.com',
};

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return [...(err as ConfigError).problems];
  }
  throw new Error('expected the configuration to be refused');
}

describe('configuration', () => {
  it('defaults to a standalone development node on 8080 with generated secrets', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      port: 8080,
      host: '0.0.0.0',
      mode: 'standalone',
      production: false,
      prefix: 'pushrelay',
    });
    expect(c.keys).toHaveLength(1);
    expect(c.generated.key?.secret).toMatch(/^[0-9a-f]{48}$/);
    expect(c.generated.jwtSecret).toMatch(/^[0-9a-f]{64}$/);
    expect(c.nodeId).toMatch(/^[a-z0-9-]+$/);
  });

  it('keeps development secrets per directory, so every dev node started there shares them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pushrelay-dev-'));
    try {
      const a = loadConfig({}, { devSecrets: () => loadDevSecrets(dir) });
      const b = loadConfig({ REDIS_URL: 'redis://r:6379' }, { devSecrets: () => loadDevSecrets(dir) });
      expect(a.generated.file).toBe(join(dir, DEV_SECRETS_FILE));
      expect(b.keys[0]!.secret).toBe(a.keys[0]!.secret);
      expect(b.jwtSecret).toBe(a.jwtSecret);
      // A configured secret is used as it is; only the missing one comes from the file.
      const c = loadConfig({ PUSHRELAY_JWT_SECRET: strong }, { devSecrets: () => loadDevSecrets(dir) });
      expect([c.jwtSecret, c.keys[0]!.secret]).toEqual([strong, a.keys[0]!.secret]);
      // Production never reads or writes it.
      let asked = false;
      loadConfig(production, {
        devSecrets: () => {
          asked = true;
          return loadDevSecrets(dir);
        },
      });
      expect(asked).toBe(false);
      // Where nothing can be written (here: below a regular file), the secrets last one run, as before.
      writeFileSync(join(dir, 'plain-file'), '');
      const none = loadDevSecrets(join(dir, 'plain-file'));
      expect(none.file).toBeUndefined();
      expect(none.publisherSecret).toMatch(/^[0-9a-f]{48}$/);
      // /proc answers ENOENT to mkdir, on which a recursive mkdir would spin forever.
      expect(loadDevSecrets('/proc/no-such-place').file).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is cluster mode when REDIS_URL is set', () => {
    expect(loadConfig({ REDIS_URL: 'redis://r:6379/0' }).mode).toBe('cluster');
    expect(loadConfig({ REDIS_URL: 'rediss://r:6380' }).mode).toBe('cluster');
  });

  it('reads Sentinel and Redis Cluster addresses from REDIS_URL', () => {
    const sentinel = loadConfig({
      REDIS_URL: 'redis+sentinel://:p%40ss@s1:26379,10.0.0.2:26380,[::1]:26381/mymaster?sentinel_password=sp',
    });
    expect(sentinel.mode).toBe('cluster');
    expect(sentinel.redisUrl).toBeUndefined();
    expect(sentinel.redis).toEqual({
      kind: 'sentinel',
      sentinels: [
        { host: 's1', port: 26379 },
        { host: '10.0.0.2', port: 26380 },
        { host: '::1', port: 26381 },
      ],
      name: 'mymaster',
      password: 'p@ss',
      sentinelPassword: 'sp',
    });
    const cluster = loadConfig({ REDIS_URL: 'redis+cluster://app:secret@r1:7000,r2:7001' });
    expect(cluster.mode).toBe('cluster');
    expect(cluster.redis).toEqual({
      kind: 'cluster',
      nodes: [
        { host: 'r1', port: 7000 },
        { host: 'r2', port: 7001 },
      ],
      username: 'app',
      password: 'secret',
    });
    expect(loadConfig({ REDIS_URL: 'redis://r:6379/2' }).redis).toMatchObject({ kind: 'single' });
    expect(loadConfig({ REDIS_URL: 'redis://r:6379/2' }).redisUrl?.pathname).toBe('/2');
  });

  it('refuses a Sentinel or Cluster REDIS_URL it cannot use, saying why', () => {
    expect(problems({ REDIS_URL: 'redis+sentinel://s1:26379,s2:26379' })).toEqual([
      'REDIS_URL: redis+sentinel: needs the master name as the path, as in redis+sentinel://host:26379,host:26380/mymaster',
    ]);
    expect(problems({ REDIS_URL: 'redis+sentinel://s1:26379,s2/mymaster' })).toEqual([
      'REDIS_URL: redis+sentinel: each host must be host:port, got "s2"',
    ]);
    expect(problems({ REDIS_URL: 'redis+sentinel://s1:26379/mymaster?password=x' })).toEqual([
      'REDIS_URL: redis+sentinel: unknown option "password" (options: sentinel_password)',
    ]);
    expect(problems({ REDIS_URL: 'redis+cluster://r1:7000,r2:99999' })).toEqual([
      'REDIS_URL: redis+cluster: each host must be host:port, got "r2:99999"',
    ]);
    expect(problems({ REDIS_URL: 'redis+cluster://r1:7000/0' })).toEqual([
      'REDIS_URL: redis+cluster: takes no path (Redis Cluster has only database 0), got "/0"',
    ]);
    expect(problems({ REDIS_URL: 'redis+cluster://' })).toEqual([
      'REDIS_URL: redis+cluster: each host must be host:port, got ""',
    ]);
    expect(problems({ REDIS_URL: 'redis+cluster://r1:7000?tls=1' })).toEqual([
      'REDIS_URL: redis+cluster: unknown option "tls"',
    ]);
    expect(problems({ REDIS_URL: 'sentinel://s1:26379/mymaster' })).toEqual([
      'REDIS_URL: must use redis:, rediss:, redis+sentinel: or redis+cluster:, got "sentinel:"',
    ]);
    expect(problems({ PUSHRELAY_REDIS_WAIT_REPLICAS: '-1', PUSHRELAY_REDIS_WAIT_MS: '0' })).toEqual([
      'PUSHRELAY_REDIS_WAIT_REPLICAS: must be between 0 and 16, got -1',
      'PUSHRELAY_REDIS_WAIT_MS: must be between 1 and 60000, got 0',
    ]);
  });

  it('names the variable and what is wrong, for every bad value at once', () => {
    const found = problems({
      PORT: 'eighty',
      REDIS_URL: 'http://x',
      LOG_LEVEL: 'loud',
      PUSHRELAY_HISTORY_SIZE: '-1',
    });
    expect(found).toEqual([
      'PORT: must be an integer, got "eighty"',
      'REDIS_URL: must use redis:, rediss:, redis+sentinel: or redis+cluster:, got "http:"',
      'LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent, got "loud"',
      'PUSHRELAY_HISTORY_SIZE: must be between 0 and 1000000, got -1',
    ]);
  });

  it('takes 0 for PUSHRELAY_ECHO_MAX_PER_ADDRESS (no cap) and refuses a negative one', () => {
    expect(loadConfig({ PUSHRELAY_ECHO_MAX_PER_ADDRESS: '0' }).echoMaxPerAddress).toBe(0);
    expect(loadConfig({}).echoMaxPerAddress).toBe(256);
    expect(problems({ PUSHRELAY_ECHO_MAX_PER_ADDRESS: '-1' })).toEqual([
      'PUSHRELAY_ECHO_MAX_PER_ADDRESS: must be between 0 and 10000000, got -1',
    ]);
  });

  it('refuses unknown PUSHRELAY_ variables and suggests the one meant', () => {
    expect(problems({ PUSHRELAY_JWT_SECRT: 'x' })).toEqual([
      'PUSHRELAY_JWT_SECRT: unknown variable (did you mean PUSHRELAY_JWT_SECRET?)',
    ]);
  });

  it('parses publisher keys with scopes and refuses malformed ones', () => {
    const c = loadConfig({ PUSHRELAY_KEYS: 'a:secret-aaaa,b:secret-bbbb:read+admin' });
    expect(c.keys.map((k) => [k.name, [...k.scopes].sort()])).toEqual([
      ['a', ['admin', 'publish', 'read']],
      ['b', ['admin', 'read']],
    ]);
    expect(problems({ PUSHRELAY_KEYS: 'a:secret-aaaa:write' })[0]).toBe(
      'PUSHRELAY_KEYS: key "a" has unknown scope "write" (scopes: publish, read, admin)',
    );
    expect(problems({ PUSHRELAY_KEYS: 'a:short' })[0]).toContain('at least 8 characters');
    expect(problems({ PUSHRELAY_KEYS: 'a:secret-aaaa,a:secret-bbbb' })[0]).toContain('appears twice');
    expect(problems({ PUSHRELAY_KEYS: 'justaname' })[0]).toContain('name:secret');
  });

  it('parses namespace options and fills defaults per channel', () => {
    const c = loadConfig({
      PUSHRELAY_NAMESPACES: '{"chat":{"publish":true,"history_size":500},"news":{"public":true}}',
      PUSHRELAY_HISTORY_TTL_SECONDS: '60',
    });
    expect(c.namespace('chat:room1')).toEqual({
      publish: true,
      public: false,
      presence: false,
      historySize: 500,
      historyTtl: 60,
    });
    expect(c.namespace('news').public).toBe(true);
    expect(c.namespace('other:x')).toMatchObject({ publish: false, public: false, historySize: 100 });
    expect(problems({ PUSHRELAY_NAMESPACES: '{"chat":{"pubish":true}}' })[0]).toContain(
      'unknown option "pubish"',
    );
    expect(problems({ PUSHRELAY_NAMESPACES: '{"user":{}}' })[0]).toContain('reserved');
    expect(problems({ PUSHRELAY_NAMESPACES: 'chat' })[0]).toContain('JSON object');
  });

  it('starts in production only with keys, a token key and an origin list, none of them weak', () => {
    expect(loadConfig(production).production).toBe(true);
    expect(loadConfig(production).generated).toEqual({});
    const found = problems({ NODE_ENV: 'production' });
    expect(found).toEqual([
      'PUSHRELAY_KEYS: required in production (no publisher could publish)',
      'PUSHRELAY_JWT_SECRET: required in production (or PUSHRELAY_JWT_PUBLIC_KEY / PUSHRELAY_JWKS_URL); clients could not be authenticated',
      'PUSHRELAY_CORS_ORIGINS: production needs an explicit list of browser origins (not empty, not *); it is what stops cross-site WebSocket hijacking',
    ]);
    expect(problems({ ...production, PUSHRELAY_KEYS: 'app:short-secret' })[0]).toContain('shorter than 32');
    expect(problems({ ...production, PUSHRELAY_JWT_SECRET: 'short-secret' })[0]).toContain('shorter than 32');
    expect(problems({ ...production, PUSHRELAY_CORS_ORIGINS: '*' })[0]).toContain('not *');
  });

  it('refuses in production the placeholder secrets shipped in compose, manifests and docs', () => {
    for (const placeholder of [
      'compose-dev-jwt-secret-not-for-production-0000',
      '<openssl rand -hex 32>',
      'change-me-change-me-change-me-change-me',
      'abababababababababababababababababab',
    ]) {
      expect(problems({ ...production, PUSHRELAY_JWT_SECRET: placeholder })[0]).toMatch(
        /^PUSHRELAY_JWT_SECRET: /,
      );
    }
  });

  it('refuses in production weak publisher key secrets, as it refuses a weak token secret', () => {
    for (const weak of [
      'compose-dev-publisher-secret-not-for-production',
      'a'.repeat(40),
      'abcabcabcabcabcabcabcabcabcabcabcabc',
    ]) {
      const found = problems({ ...production, PUSHRELAY_KEYS: `app:${strong},dev:${weak}` });
      expect(found).toHaveLength(1);
      expect(found[0]).toMatch(/^PUSHRELAY_KEYS: the secret of key "dev" /);
      expect(found[0]).not.toContain(weak);
    }
    // Outside production a short readable key stays fine for trying things out.
    expect(loadConfig({ PUSHRELAY_KEYS: `dev:${'a'.repeat(40)}` }).keys[0]!.name).toBe('dev');
  });

  it('refuses a NODE_ENV it does not know, naming the values it takes', () => {
    expect(problems({ NODE_ENV: 'prod' })).toEqual([
      'NODE_ENV: must be one of production, development, test, got "prod"',
    ]);
    expect(loadConfig({ NODE_ENV: 'test' }).production).toBe(false);
    expect(loadConfig({ NODE_ENV: 'development' }).production).toBe(false);
  });

  it('never prints a key it refuses', () => {
    expect(problems({ PUSHRELAY_ECHO_CLIENTS: 's3cret-echo-key-0123456789' })).toEqual([
      'PUSHRELAY_ECHO_CLIENTS: each entry must be appId:key (appId of A-Z a-z 0-9 _ . -), got an entry without a colon',
    ]);
    expect(problems({ PUSHRELAY_KEYS: 's3cret-publisher-key-0123' })[0]).not.toContain('s3cret');
  });

  it('never prints the password of a URL it refuses', () => {
    expect(
      problems({ PUSHRELAY_WEBHOOKS: 'https://ok.example/hook, https://app:s3cret-pw@bad host/x' })[0],
    ).toBe('PUSHRELAY_WEBHOOKS: must be http: or https: URLs, got "https://***@bad host/x"');
    const cases = [
      'redis://:s3cret-pw@redis host:6379',
      'redis://user:s3cret-pw@redis:port',
      'redis://:s3cret-pw#x@redis:6379',
      'redis+sentinel://user:s3cret-pw@s1:26379,s2/mymaster',
      'redis+cluster://:s3cret?pw@h1:7000',
      'redis+cluster://:s3cret%zz@h1:7000',
      'redis+sentinel://s1:26379/mymaster?sentinel_password=s3cret-pw&x=1',
      'user:s3cret-pw@redis:6379',
      'http://user:s3cret-pw@redis:6379',
    ];
    for (const raw of cases) {
      const found = problems({ REDIS_URL: raw });
      expect(found, raw).toHaveLength(1);
      expect(found[0], raw).toMatch(/^REDIS_URL: /);
      expect(found[0], raw).not.toContain('s3cret');
    }
    // A webhook or JWKS URL with credentials cannot be fetched, and fetch's error would print them.
    for (const name of ['PUSHRELAY_OFFLINE_WEBHOOK', 'PUSHRELAY_JWKS_URL', 'PUSHRELAY_WEBHOOKS']) {
      const found = problems({
        [name]: 'https://app:s3cret-pw@hooks.example.com/x',
        PUSHRELAY_OFFLINE_WEBHOOK_SECRET: strong,
      });
      expect(found[0]).toBe(
        `${name}: must not carry credentials (user:password@), got "https://***@hooks.example.com/x"`,
      );
    }
  });

  it('parses the proxies to trust for client addresses', () => {
    expect(loadConfig({}).trustProxy).toBe(false);
    expect(loadConfig({ PUSHRELAY_TRUST_PROXY: 'true' }).trustProxy).toBe(true);
    expect(loadConfig({ PUSHRELAY_TRUST_PROXY: '2' }).trustProxy).toBe(2);
    expect(loadConfig({ PUSHRELAY_TRUST_PROXY: '10.0.0.0/8, 127.0.0.1, ::1' }).trustProxy).toEqual([
      '10.0.0.0/8',
      '127.0.0.1',
      '::1',
    ]);
    expect(problems({ PUSHRELAY_TRUST_PROXY: 'lb.internal' })[0]).toContain('"lb.internal" is none');
    expect(problems({ PUSHRELAY_TRUST_PROXY: '10.0.0.0/33' })[0]).toContain('PUSHRELAY_TRUST_PROXY');
  });

  it('takes exactly one way to verify tokens', () => {
    expect(
      problems({ PUSHRELAY_JWT_SECRET: strong, PUSHRELAY_JWKS_URL: 'https://issuer.example/jwks.json' })[0],
    ).toContain('set exactly one way');
  });

  it('serves the console outside production, and in production only when PUSHRELAY_CONSOLE=on', () => {
    expect(loadConfig({}).console).toBe(true);
    expect(loadConfig({ PUSHRELAY_CONSOLE: 'off' }).console).toBe(false);
    expect(loadConfig(production).console).toBe(false);
    expect(loadConfig({ ...production, PUSHRELAY_CONSOLE: 'on' }).console).toBe(true);
    expect(problems({ PUSHRELAY_CONSOLE: 'yes' })).toEqual([
      'PUSHRELAY_CONSOLE: must be on or off, got "yes"',
    ]);
  });

  it('ignores the variables the CLI and SDK read, which share a shell with npm start', () => {
    const c = loadConfig({ PUSHRELAY_URL: 'http://x', PUSHRELAY_SECRET: 's', PUSHRELAY_KEY_NAME: 'dev' });
    expect(c.mode).toBe('standalone');
    expect(problems({ PUSHRELAY_KEY: 'dev' })).toEqual([
      'PUSHRELAY_KEY: unknown variable (did you mean PUSHRELAY_KEYS?)',
    ]);
  });

  it('returns a frozen configuration', () => {
    const c = loadConfig({});
    expect(Object.isFrozen(c)).toBe(true);
  });
});

describe('configuration of the Redis ingest sources', () => {
  const redis = { REDIS_URL: 'redis://127.0.0.1:6379' };

  it('reads the ingest, ActionCable and AnyCable settings', () => {
    const c = loadConfig({
      ...redis,
      PUSHRELAY_INGEST_PARTITIONS: '32',
      PUSHRELAY_ACTIONCABLE_PREFIX: 'shop_production',
      PUSHRELAY_ANYCABLE: 'on',
      PUSHRELAY_ANYCABLE_BROADCAST_KEY: 'k',
    });
    expect(c).toMatchObject({
      ingestPartitions: 32,
      ingestMaxInflight: 1000,
      ingestDeadLetters: 10_000,
      actioncablePrefix: 'shop_production',
      anycable: true,
      anycableChannel: '__anycable__',
      anycableBroadcastKey: 'k',
    });
    expect(loadConfig({})).toMatchObject({ actioncablePrefix: undefined, anycable: false });
  });

  it('refuses an ActionCable prefix that overlaps the relay’s own, or without Redis', () => {
    expect(problems({ ...redis, PUSHRELAY_ACTIONCABLE_PREFIX: 'pushrelay' })[0]).toMatch(
      /^PUSHRELAY_ACTIONCABLE_PREFIX: "pushrelay" overlaps PUSHRELAY_PREFIX/,
    );
    expect(problems({ ...redis, PUSHRELAY_ACTIONCABLE_PREFIX: 'pushrelay:x' })[0]).toMatch(/overlaps/);
    expect(problems({ ...redis, PUSHRELAY_PREFIX: 'app', PUSHRELAY_ACTIONCABLE_PREFIX: 'app' })[0]).toMatch(
      /overlaps PUSHRELAY_PREFIX "app"/,
    );
    expect(problems({ PUSHRELAY_ACTIONCABLE_PREFIX: 'shop' })).toEqual([
      'PUSHRELAY_ACTIONCABLE_PREFIX: needs REDIS_URL (Rails publishes on Redis)',
    ]);
    expect(problems({ ...redis, PUSHRELAY_ACTIONCABLE_PREFIX: 'has space' })[0]).toMatch(
      /^PUSHRELAY_ACTIONCABLE_PREFIX: must be 1-100 printable characters/,
    );
  });

  it('refuses bad AnyCable settings', () => {
    expect(problems({ ...redis, PUSHRELAY_ANYCABLE: 'yes' })[0]).toBe(
      'PUSHRELAY_ANYCABLE: must be on or off, got "yes"',
    );
    expect(
      problems({ ...redis, PUSHRELAY_ANYCABLE: 'on', PUSHRELAY_ANYCABLE_CHANNEL: 'pushrelay:ac' })[0],
    ).toMatch(/^PUSHRELAY_ANYCABLE_CHANNEL: "pushrelay:ac" is inside PUSHRELAY_PREFIX/);
    expect(
      problems({ ...production, PUSHRELAY_ANYCABLE: 'on', PUSHRELAY_ANYCABLE_BROADCAST_KEY: 'short' }),
    ).toContain('PUSHRELAY_ANYCABLE_BROADCAST_KEY: is shorter than 32 characters');
    expect(problems({ ...redis, PUSHRELAY_INGEST_PARTITIONS: '0' })[0]).toBe(
      'PUSHRELAY_INGEST_PARTITIONS: must be between 1 and 1024, got 0',
    );
  });
});

describe('configuration of Laravel Echo compatibility', () => {
  const redis = { REDIS_URL: 'redis://127.0.0.1:6379' };

  it('tells an empty Redis prefix (no prefix) from an unset one (off)', () => {
    expect(loadConfig({ ...redis, PUSHRELAY_ECHO_REDIS_PREFIX: '' }).echoRedisPrefix).toBe('');
    expect(loadConfig({ ...redis, PUSHRELAY_ECHO_REDIS_PREFIX: 'laravel_database_' }).echoRedisPrefix).toBe(
      'laravel_database_',
    );
    expect(loadConfig(redis).echoRedisPrefix).toBeUndefined();
    // Other variables still read empty as unset.
    expect(loadConfig({ ...redis, PUSHRELAY_ACTIONCABLE_PREFIX: '' }).actioncablePrefix).toBeUndefined();
  });

  it('reads the Echo settings with safe defaults', () => {
    const c = loadConfig({
      PUSHRELAY_ECHO: 'on',
      PUSHRELAY_ECHO_AUTH_URL: 'https://shop.example/broadcasting/auth',
      PUSHRELAY_ECHO_CLIENTS: 'shop:key-one, admin:key:with:colons',
    });
    expect(c).toMatchObject({
      echo: true,
      echoAuthTimeout: 10,
      echoAuthMaxInflight: 256,
      echoAuthMaxPerSocket: 8,
      echoClients: [
        { appId: 'shop', key: 'key-one' },
        { appId: 'admin', key: 'key:with:colons' },
      ],
    });
    expect(c.echoAuthUrl?.href).toBe('https://shop.example/broadcasting/auth');
    expect(loadConfig({})).toMatchObject({ echo: false, echoAuthUrl: undefined, echoClients: [] });
  });

  it('refuses bad Echo settings, naming the variable', () => {
    expect(problems({ PUSHRELAY_ECHO: 'yes' })).toEqual(['PUSHRELAY_ECHO: must be on or off, got "yes"']);
    expect(problems({ PUSHRELAY_ECHO_REDIS_PREFIX: 'laravel_' })).toEqual([
      'PUSHRELAY_ECHO_REDIS_PREFIX: needs REDIS_URL (Laravel broadcasts on Redis)',
    ]);
    expect(problems({ PUSHRELAY_ECHO_AUTH_URL: 'https://shop.example/broadcasting/auth' })[0]).toMatch(
      /^PUSHRELAY_ECHO_AUTH_URL: needs PUSHRELAY_ECHO=on/,
    );
    expect(problems({ PUSHRELAY_ECHO: 'on', PUSHRELAY_ECHO_AUTH_URL: 'ftp://x' })[0]).toMatch(
      /^PUSHRELAY_ECHO_AUTH_URL: must use http: or https:/,
    );
    expect(problems({ PUSHRELAY_ECHO_CLIENTS: 'nokey' })[0]).toMatch(
      /^PUSHRELAY_ECHO_CLIENTS: each entry must be appId:key/,
    );
    expect(problems({ ...production, PUSHRELAY_ECHO_CLIENTS: 'shop:short' })).toContain(
      'PUSHRELAY_ECHO_CLIENTS: the key of app "shop" is shorter than 32 characters',
    );
  });
});
