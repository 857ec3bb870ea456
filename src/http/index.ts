export { DEFAULT_TIMEOUTS, HttpClient, HttpError, type HttpClientOptions, type HttpRequest, type HttpResponse, type RetryNotice, type Timeouts } from './client.js';
export { RateLimitGate, rateLimitNotice } from './rateLimit.js';
export { Redactor } from './redact.js';
export { DEFAULT_RETRY, RetryableError, backoffMs, isRetryable, parseRetryAfter, retryDelay, type RetryPolicy } from './retry.js';
