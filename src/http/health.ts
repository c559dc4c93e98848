import { Type } from 'typebox';
import type { ErrorCode } from '../errors.js';
import { RelayError } from '../errors.js';
import type { Metrics } from '../metrics/index.js';
import { sendError } from './errors.js';
import { errorResponses } from './schemas.js';
import type { HttpApp } from './types.js';

export interface HealthDeps {
  readonly metrics: Metrics;
  readonly nodeId: string;
  readonly mode: 'standalone' | 'cluster';
  /** Why the node should not get traffic, or undefined when it should. */
  readonly notReady: () => ErrorCode | undefined;
}

export function registerHealthRoutes(app: HttpApp, deps: HealthDeps): void {
  app.get(
    '/healthz',
    {
      schema: {
        response: { 200: Type.Object({ status: Type.Literal('ok') }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        response: {
          200: Type.Object({ status: Type.Literal('ready'), node: Type.String(), mode: Type.String() }),
          ...errorResponses,
        },
      },
    },
    async (_request, reply) => {
      const reason = deps.notReady();
      if (reason !== undefined) return sendError(reply, new RelayError(reason, undefined, 1));
      return { status: 'ready' as const, node: deps.nodeId, mode: deps.mode };
    },
  );

  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', deps.metrics.registry.contentType);
    return deps.metrics.registry.metrics();
  });
}
