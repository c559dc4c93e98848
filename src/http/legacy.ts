import { Type } from 'typebox';
import { RelayError } from '../errors.js';
import type { Ingest } from '../ingest/ingest.js';
import { assertEventName, assertUserId, userChannel } from '../ingest/message.js';
import type { Presence } from '../presence/index.js';
import type { FormBody } from './body.js';
import { errorResponses, PublishResultSchema } from './schemas.js';
import type { HttpApp } from './types.js';

// The first-generation relays' routes, so apps written against them keep
// working unchanged (behind the same publisher auth as /v1).

const legacyConfig = { scope: 'publish' as const, rateLimit: {} };
const response = { 200: PublishResultSchema, ...errorResponses };

export function registerLegacyRoutes(app: HttpApp, ingest: Ingest, presence: Presence): void {
  // GET /?message=test broadcasts `notification` with { message }.
  app.get(
    '/',
    {
      config: legacyConfig,
      schema: {
        querystring: Type.Object({ message: Type.String() }),
        response,
      },
    },
    async (request) =>
      ingest.publish(
        { event: 'notification', data: { message: request.query.message }, broadcast: true },
        'legacy',
      ),
  );

  // POST /message/:action/:to emits :action with the body to user :to; 404 when the user is offline everywhere.
  app.post(
    '/message/:action/:to',
    {
      config: legacyConfig,
      schema: {
        params: Type.Object({ action: Type.String(), to: Type.String() }),
        response,
      },
    },
    async (request) => {
      const { action, to } = request.params;
      assertEventName(action);
      assertUserId(to);
      const [sockets = 0] = await presence.count([userChannel(to)]);
      if (sockets === 0)
        throw new RelayError('user_offline', `user "${to}" has no socket connected anywhere`);
      const data = request.body === undefined ? {} : { ...(request.body as object) };
      return ingest.publish({ event: action, data, users: [to] }, 'legacy');
    },
  );

  // POST / with destination and data emits `push` with { data } to that user.
  app.post(
    '/',
    {
      config: legacyConfig,
      schema: {
        response,
      },
    },
    async (request) => {
      const body = (request.body ?? {}) as FormBody | Record<string, unknown>;
      const destination = body.destination;
      if (typeof destination !== 'string') {
        throw new RelayError('invalid_body', 'the body needs a "destination" field naming the user');
      }
      assertUserId(destination);
      return ingest.publish(
        { event: 'push', data: { data: body.data ?? null }, users: [destination] },
        'legacy',
      );
    },
  );
}
