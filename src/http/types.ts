import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { PublisherKey, Scope } from '../config/index.js';

export type HttpApp = FastifyInstance<
  Server,
  IncomingMessage,
  ServerResponse,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

declare module 'fastify' {
  interface FastifyRequest {
    /** The body as received, kept for signature checks. */
    rawBody?: Buffer;
    /** True when the body came form-encoded. */
    isForm?: boolean;
    /** The publisher key that authenticated the request. */
    publisher?: PublisherKey;
  }
  interface FastifyContextConfig {
    /** Scope a publisher key needs for this route; routes without one are public. */
    scope?: Scope;
  }
}
