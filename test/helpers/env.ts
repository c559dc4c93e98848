import { mintToken } from '../../src/realtime/mint.js';

// Credentials every test node shares.
export const JWT_SECRET = 'test-jwt-secret-0123456789abcdef-0123456789abcdef';
export const KEY = { name: 'app', secret: 'test-publisher-secret-0123456789abcdef' } as const;
export const READ_KEY = { name: 'reader', secret: 'test-reader-secret-0123456789abcdef' } as const;

export function testEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string | undefined> = {
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent', // TEST_LOG_LEVEL=debug shows the nodes' logs
    PUSHRELAY_KEYS: `${KEY.name}:${KEY.secret},${READ_KEY.name}:${READ_KEY.secret}:read`,
    PUSHRELAY_JWT_SECRET: JWT_SECRET,
    PUSHRELAY_DRAIN_SECONDS: '1',
    PUSHRELAY_PRESENCE_TTL_SECONDS: '3',
    ...extra,
  };
  return Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined)) as Record<string, string>;
}

export function token(
  user: string,
  opts: { channels?: string[]; ttlSeconds?: number; userInfo?: Record<string, unknown> } = {},
): Promise<string> {
  return mintToken(JWT_SECRET, user, opts);
}
