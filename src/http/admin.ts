import { Type } from 'typebox';
import { assertClientChannel, assertUserId } from '../ingest/message.js';
import { MAX_CHANNELS_PER_PUBLISH } from '../ingest/schema.js';
import type { UserControl } from '../realtime/control.js';
import { errorResponses } from './schemas.js';
import type { HttpApp } from './types.js';

const UserParams = Type.Object({ id: Type.String() });
const ChannelsBody = Type.Object(
  { channels: Type.Array(Type.String(), { minItems: 1, maxItems: MAX_CHANNELS_PER_PUBLISH }) },
  { additionalProperties: false },
);
const Reached = Type.Object({ user: Type.String(), sockets: Type.Integer() });

/** Admin routes acting on all of a user's sockets, cluster-wide. */
export function registerAdminRoutes(app: HttpApp, control: UserControl): void {
  app.post(
    '/v1/users/:id/disconnect',
    {
      config: { scope: 'admin' },
      schema: { params: UserParams, response: { 200: Reached, ...errorResponses } },
    },
    async (request) => {
      const user = request.params.id;
      assertUserId(user);
      return { user, sockets: await control.apply({ op: 'disconnect', user }) };
    },
  );

  for (const op of ['subscribe', 'unsubscribe'] as const) {
    app.post(
      `/v1/users/:id/${op}`,
      {
        config: { scope: 'admin' },
        schema: { params: UserParams, body: ChannelsBody, response: { 200: Reached, ...errorResponses } },
      },
      async (request) => {
        const user = request.params.id;
        assertUserId(user);
        const channels = [...new Set(request.body.channels)];
        for (const c of channels) assertClientChannel(c);
        return { user, sockets: await control.apply({ op, user, channels }) };
      },
    );
  }
}
