import { Type } from 'typebox';
import { type Sample, type Sampler, STATS_WINDOW_MS } from '../metrics/samples.js';
import type { Presence } from '../presence/index.js';
import type { Redis } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';
import { errorResponses } from './schemas.js';
import type { HttpApp } from './types.js';

const Rate = Type.Number({ description: 'per second' });
const NullableNumber = Type.Union([Type.Number(), Type.Null()]);

export const SampleSchema = Type.Object({
  ts: Type.Integer({ description: 'end of the interval, milliseconds since the epoch' }),
  connections: Type.Integer({ description: 'sockets connected now' }),
  publishes: Type.Record(Type.String(), Rate, { description: 'accepted publishes per second, by source' }),
  deliveries: Rate,
  latency_p50_ms: NullableNumber,
  latency_p99_ms: NullableNumber,
  rate_limited: Rate,
  ingest_lag_s: NullableNumber,
  ingest_pending: Type.Integer(),
  webhook_queue: Type.Union([Type.Integer(), Type.Null()]),
  draining: Type.Boolean(),
  version: Type.String(),
});

export const StatsAnswer = Type.Object({
  node: Type.String(),
  mode: Type.Union([Type.Literal('standalone'), Type.Literal('cluster')]),
  interval_ms: Type.Integer(),
  nodes: Type.Array(
    Type.Object({
      id: Type.String(),
      startedAt: Type.Integer(),
      lastSeen: Type.Integer({ description: 'last heartbeat, milliseconds since the epoch' }),
      sockets: Type.Integer(),
      users: Type.Integer(),
      /** From the node's newest sample. */
      draining: Type.Boolean(),
      version: Type.Union([Type.String(), Type.Null()]),
      samples: Type.Array(SampleSchema, { description: 'oldest first, newer than `since`' }),
    }),
  ),
});

/**
 * The console's chart data: every live node with its samples newer than
 * `since` (the page asks for what it has not got yet, so a poll carries a
 * few hundred bytes per node).
 */
export function registerStatsRoutes(
  app: HttpApp,
  deps: {
    readonly presence: Presence;
    readonly sampler: Sampler;
    readonly nodeId: string;
    readonly mode: 'standalone' | 'cluster';
    readonly intervalMs: number;
    readonly redis?: { readonly command: Redis; readonly names: RedisNames } | undefined;
  },
): void {
  app.get(
    '/v1/admin/stats',
    {
      config: { scope: 'admin' },
      schema: {
        querystring: Type.Object({
          since: Type.Optional(
            Type.String({
              pattern: '^\\d{1,15}$',
              description: 'only samples newer than this (ms since the epoch)',
            }),
          ),
        }),
        response: { 200: StatsAnswer, ...errorResponses },
      },
    },
    async (request) => {
      const since = Number(request.query.since ?? 0);
      const nodes = await deps.presence.nodes();
      nodes.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      // Newest first in Redis: read about as many as are newer than `since`, never the whole list.
      const wanted = Math.min(
        Math.ceil(STATS_WINDOW_MS / deps.intervalMs),
        Math.ceil((Date.now() - since) / deps.intervalMs) + 2,
      );
      const samplesOf = async (id: string): Promise<{ samples: Sample[]; newest?: Sample }> => {
        if (!deps.redis || id === deps.nodeId) {
          const local = deps.sampler.local();
          return { samples: local.filter((s) => s.ts > since), newest: local[local.length - 1] };
        }
        const raw = await deps.redis.command.lrange(deps.redis.names.stats(id), 0, Math.max(0, wanted - 1));
        const parsed = raw.flatMap((text): Sample[] => {
          // Written by another node, maybe of another version: a sample this one cannot read is skipped.
          try {
            const s = JSON.parse(text) as Sample;
            return typeof s?.ts === 'number' ? [s] : [];
          } catch {
            return [];
          }
        });
        return { samples: parsed.filter((s) => s.ts > since).reverse(), newest: parsed[0] };
      };
      const all = await Promise.all(nodes.map((n) => samplesOf(n.id)));
      return {
        node: deps.nodeId,
        mode: deps.mode,
        interval_ms: deps.intervalMs,
        nodes: nodes.map((n, i) => {
          const { samples, newest } = all[i]!;
          return {
            id: n.id,
            startedAt: n.startedAt,
            lastSeen: n.lastSeen,
            sockets: n.sockets,
            users: n.users,
            draining: newest?.draining ?? false,
            version: newest?.version ?? null,
            // Only what the page has not got yet.
            samples,
          };
        }),
      };
    },
  );
}
