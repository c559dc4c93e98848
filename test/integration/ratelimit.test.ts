import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sliceSize } from '../../src/http/ratelimit.js';
import { post } from '../helpers/http.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';

// The publisher rate limit holds for the cluster, not per node, though nodes
// take their quota from Redis in slices instead of asking on every request.

describe('publisher rate limit across two nodes', () => {
  let redis: RedisServer;
  const nodes: Awaited<ReturnType<typeof startInProcess>>[] = [];

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const n of nodes) await n.stop();
    await redis?.stop();
  });

  async function pair(limit: number, prefix: string) {
    const env = { REDIS_URL: redis.url, PUSHRELAY_RATE_LIMIT: String(limit), PUSHRELAY_PREFIX: prefix };
    const a = await startInProcess(env);
    const b = await startInProcess(env);
    nodes.push(a, b);
    return [a, b] as const;
  }

  const body = { event: 'e', data: 1, users: ['nobody'] };

  it('refuses the request past the limit, whichever node it reaches, with 429 and Retry-After', async () => {
    const [a, b] = await pair(5, 'rl1');
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await post(`${(i % 2 ? b : a).url}/v1/publish`, body)).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    const refused = await post(`${a.url}/v1/publish`, body);
    expect(refused.body).toMatchObject({ error: { code: 'rate_limited' } });
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  it('admits at most the limit cluster-wide when nodes take their quota in slices', async () => {
    const limit = 400;
    expect(sliceSize(limit)).toBe(4);
    const [a, b] = await pair(limit, 'rl2');
    let ok = 0;
    for (let i = 0; i < 220; i++) {
      const answers = await Promise.all([
        post(`${a.url}/v1/publish`, body),
        post(`${b.url}/v1/publish`, body),
      ]);
      for (const r of answers) {
        if (r.status === 200) ok++;
        else expect(r.status).toBe(429);
      }
    }
    // Never more than the limit; at most one unused slice per node less.
    expect(ok).toBeLessThanOrEqual(limit);
    expect(ok).toBeGreaterThanOrEqual(limit - 2 * sliceSize(limit));
    // One Redis counter per route and window, holding what the nodes took in slices.
    const keys = await redis.client().keys('rl2:rl:*');
    expect(keys).toHaveLength(1);
    expect(Number(await redis.client().get(keys[0]!)) % sliceSize(limit)).toBe(0);
  });
});
