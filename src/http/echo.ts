import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { isRelayError, RelayError } from '../errors.js';
import type { Ingest } from '../ingest/ingest.js';
import { decodeUtf8, parseJsonText } from '../ingest/json.js';
import { assertClientChannel, isChannelName, listsMembers, USER_NAMESPACE } from '../ingest/message.js';
import { parsePublishBody } from '../ingest/schema.js';
import { ECHO_PRESENCE_PREFIX, infoValue, type Presence } from '../presence/index.js';
import type { RelayServer } from '../realtime/events.js';
import { userIdOut } from '../realtime/protocols/echo/auth.js';
import { errorResponses } from './schemas.js';
import type { HttpApp } from './types.js';

// laravel-echo-server's HTTP API (src/api/http-api.ts, src/subscribers/
// http-subscriber.ts, src/server.ts), for apps that publish or read through
// it: every route under /apps/:appId, authorized by one of its `clients`
// (appId and key) with `?auth_key=` or `Authorization: Bearer`. Answers cover
// the whole cluster, where laravel-echo-server knew only its own process.

export interface EchoApiDeps {
  readonly clients: readonly { readonly appId: string; readonly key: string }[];
  readonly ingest: Ingest;
  readonly presence: Presence;
  readonly io: RelayServer;
  /** Cluster mode: the other nodes are asked for their channels. */
  readonly cluster: boolean;
  readonly maxJsonDepth: number;
}

/** How long the channel list waits for the other nodes. */
const CHANNELS_TIMEOUT_MS = 3000;

const digest = (s: string) => createHash('sha256').update(s).digest();

/** This node's channels with their socket counts (not socket ids, users' own channels or protocol rooms). */
export function localChannels(io: RelayServer, prefix: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [room, ids] of io.of('/').adapter.rooms) {
    if (ids.has(room) || !listsMembers(room) || room.startsWith(`${USER_NAMESPACE}:`)) continue;
    if (!room.startsWith(prefix)) continue;
    out[room] = ids.size;
  }
  return out;
}

const AppParams = Type.Object({ appId: Type.String() });
const AuthQuery = Type.Object({ auth_key: Type.Optional(Type.String()) });
const Member = Type.Object({ id: Type.Union([Type.String(), Type.Number()]), user_info: Type.Unknown() });
const ChannelInfo = Type.Object({
  subscription_count: Type.Integer(),
  occupied: Type.Boolean(),
  user_count: Type.Optional(Type.Integer()),
});

export function registerEchoRoutes(app: HttpApp, deps: EchoApiDeps): void {
  if (deps.clients.length === 0) return;
  const keys = new Map(deps.clients.map((c) => [c.appId, digest(c.key)]));
  const { io, presence } = deps;

  if (deps.cluster) {
    io.on('pushrelay:echo-channels', (prefix, ack) => {
      if (typeof prefix === 'string' && typeof ack === 'function') ack(localChannels(io, prefix));
    });
  }

  const authorize = (request: FastifyRequest) => {
    const { appId } = request.params as { appId: string };
    const query = request.query as { auth_key?: string };
    const header = request.headers.authorization;
    const key = query.auth_key ?? (header?.startsWith('Bearer ') ? header.slice(7) : undefined);
    if (key === undefined || key === '') {
      throw new RelayError(
        'unauthorized',
        'send the app key: ?auth_key=<key> or Authorization: Bearer <key>',
      );
    }
    const expected = keys.get(appId);
    if (expected === undefined || !timingSafeEqual(digest(key), expected)) {
      throw new RelayError('forbidden', 'unknown app id or wrong key (PUSHRELAY_ECHO_CLIENTS)');
    }
  };

  app.register(async (scope) => {
    // laravel-echo-server reads the body as JSON whatever its content type.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
    scope.post(
      '/apps/:appId/events',
      {
        // The publisher rate limit (PUSHRELAY_RATE_LIMIT), per app id, cluster-wide as for publisher keys.
        config: {
          rateLimit: {
            keyGenerator: (request: FastifyRequest) => `echo:${(request.params as { appId: string }).appId}`,
          },
        },
        onRequest: async (request) => authorize(request),
        schema: {
          params: AppParams,
          querystring: AuthQuery,
          response: { 200: Type.Object({ message: Type.String() }), ...errorResponses },
        },
      },
      async (request) => {
        const raw = request.body;
        if (!Buffer.isBuffer(raw) || raw.length === 0) {
          throw new RelayError('invalid_body', 'send {channel | channels, name, data, socket_id} as JSON');
        }
        const body = parseJsonText(decodeUtf8(raw), deps.maxJsonDepth);
        if (typeof body !== 'object' || body === null || Array.isArray(body)) {
          throw new RelayError(
            'invalid_body',
            'the body must be a JSON object {channel | channels, name, data}',
          );
        }
        const { channel, channels, name, data, socket_id: socket } = body as Record<string, unknown>;
        const list = channels !== undefined ? channels : channel !== undefined ? [channel] : undefined;
        if (!Array.isArray(list) || list.length === 0 || list.some((c) => typeof c !== 'string')) {
          throw new RelayError('invalid_body', 'a channel (or channels, a list of names) is required');
        }
        if (typeof name !== 'string') throw new RelayError('invalid_body', 'name (the event) is required');
        if (data === undefined || data === null) throw new RelayError('invalid_body', 'data is required');
        if (socket !== undefined && socket !== null && typeof socket !== 'string') {
          throw new RelayError('invalid_body', 'socket_id must be a socket id');
        }
        let value: unknown = data;
        if (typeof data === 'string') {
          // As laravel-echo-server does: data given as JSON text is decoded, other text stays text.
          try {
            value = parseJsonText(data, deps.maxJsonDepth);
          } catch (err) {
            if (!isRelayError(err) || err.code !== 'invalid_json') throw err;
          }
        }
        // The publish route's own checks: channel names and count, event name, sizes.
        const publish = parsePublishBody({ event: name, channels: list, data: value });
        await deps.ingest.publish(publish, 'echo', {
          exceptSockets: typeof socket === 'string' && socket !== '' ? [socket] : [],
        });
        return { message: 'ok' };
      },
    );
  });

  // Checked before the body is read, as the publisher key is.
  const read = { onRequest: async (request: FastifyRequest) => authorize(request) };

  app.get(
    '/apps/:appId/status',
    {
      ...read,
      schema: {
        params: AppParams,
        querystring: AuthQuery,
        response: {
          200: Type.Object({
            subscription_count: Type.Integer(),
            uptime: Type.Number(),
            memory_usage: Type.Record(Type.String(), Type.Number()),
          }),
          ...errorResponses,
        },
      },
    },
    async () => {
      const nodes = await presence.nodes();
      return {
        // Sockets connected to the cluster (laravel-echo-server: its engine's clients).
        subscription_count: nodes.reduce((n, node) => n + node.sockets, 0),
        uptime: process.uptime(),
        memory_usage: { ...process.memoryUsage() },
      };
    },
  );

  app.get(
    '/apps/:appId/channels',
    {
      ...read,
      schema: {
        params: AppParams,
        querystring: Type.Object({
          auth_key: Type.Optional(Type.String()),
          filter_by_prefix: Type.Optional(Type.String({ maxLength: 200 })),
        }),
        response: {
          200: Type.Object({ channels: Type.Record(Type.String(), ChannelInfo) }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const prefix = request.query.filter_by_prefix ?? '';
      const counts = localChannels(io, prefix);
      if (deps.cluster) {
        let replies: Record<string, number>[];
        try {
          // The adapter gives up on nodes that do not answer (its requestsTimeout); so do we.
          replies = await Promise.race([
            io.serverSideEmitWithAck('pushrelay:echo-channels', prefix),
            new Promise<never>((_, reject) => setTimeout(reject, CHANNELS_TIMEOUT_MS).unref()),
          ]);
        } catch {
          throw new RelayError('unavailable', 'not every node answered with its channels; retry');
        }
        for (const reply of replies) {
          for (const [c, n] of Object.entries(reply ?? {})) {
            if (typeof n === 'number' && isChannelName(c)) counts[c] = (counts[c] ?? 0) + n;
          }
        }
      }
      const channels: Record<string, { subscription_count: number; occupied: boolean }> = {};
      for (const [c, n] of Object.entries(counts)) channels[c] = { subscription_count: n, occupied: true };
      return { channels };
    },
  );

  app.get(
    '/apps/:appId/channels/:channel',
    {
      ...read,
      schema: {
        params: Type.Object({ appId: Type.String(), channel: Type.String() }),
        querystring: AuthQuery,
        response: { 200: ChannelInfo, ...errorResponses },
      },
    },
    async (request) => {
      const { channel } = request.params;
      assertClientChannel(channel);
      const [count = 0] = await presence.count([channel]);
      if (!channel.startsWith(ECHO_PRESENCE_PREFIX))
        return { subscription_count: count, occupied: count > 0 };
      const members = await presence.members(channel);
      return { subscription_count: count, occupied: count > 0, user_count: members.length };
    },
  );

  app.get(
    '/apps/:appId/channels/:channel/users',
    {
      ...read,
      schema: {
        params: Type.Object({ appId: Type.String(), channel: Type.String() }),
        querystring: AuthQuery,
        response: { 200: Type.Object({ users: Type.Array(Member) }), ...errorResponses },
      },
    },
    async (request) => {
      const { channel } = request.params;
      assertClientChannel(channel);
      if (!channel.startsWith(ECHO_PRESENCE_PREFIX)) {
        throw new RelayError(
          'invalid_channel',
          'the user list is only possible for presence channels (presence-*)',
        );
      }
      const members = await presence.members(channel);
      return {
        users: members.map((m) => ({ id: userIdOut(m.user), user_info: infoValue(m.info) ?? null })),
      };
    },
  );
}
