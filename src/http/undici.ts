/**
 * undici's `Agent` and `request`, loaded from their own modules. undici's
 * index loads every feature it has (fetch, WebSocket, caches, mocks,
 * proxies, interceptors) for 70-90 ms at the start of every networked
 * command: `node -e "require('undici')"` took 0.18-0.21 s, these parts
 * 0.11-0.13 s, Node alone 0.08 s. Their paths are undici's files rather
 * than its API: should another undici move them, the whole is loaded as
 * before.
 */
import { createRequire } from 'node:module';
import type * as Undici from 'undici';

type RequestOptions = Omit<Undici.Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & {
  method?: Undici.Dispatcher.HttpMethod;
  dispatcher?: Undici.Dispatcher;
};

const require = createRequire(import.meta.url);

function load(): { Agent: typeof Undici.Agent; request: typeof Undici.request } {
  try {
    const Agent = require('undici/lib/dispatcher/agent.js') as typeof Undici.Agent;
    // What undici's index does: the request API as a method of every dispatcher.
    Object.assign((require('undici/lib/dispatcher/dispatcher.js') as { prototype: object }).prototype, require('undici/lib/api/index.js'));
    let shared: Undici.Agent | undefined;
    const request = (url: string | URL, { dispatcher, ...options }: RequestOptions = {}) => {
      const { origin, pathname, search } = new URL(url);
      return (dispatcher ?? (shared ??= new Agent())).request({ ...options, origin, path: pathname + search, method: options.method ?? 'GET' });
    };
    return { Agent, request: request as typeof Undici.request };
  } catch {
    return require('undici') as typeof Undici;
  }
}

export const { Agent, request } = load();
export type Agent = Undici.Agent;
export type { Dispatcher } from 'undici';
