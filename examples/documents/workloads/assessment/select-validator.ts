/**
 * Which validator `assessment.validate` uses, decided by the environment.
 */
import { AnthropicValidator, DEFAULT_ANTHROPIC_MODEL } from './anthropic-validator.ts';
import { LocalValidator } from './local-validator.ts';
import type { Validator } from './types.ts';

/**
 * The {@link AnthropicValidator} when `ANTHROPIC_API_KEY` is set (honouring
 * `ANTHROPIC_BASE_URL` and `ANTHROPIC_MODEL`), else the offline
 * {@link LocalValidator}. Blank values count as unset, so `ANTHROPIC_API_KEY=`
 * in an env file does not send unauthenticated requests.
 */
export function selectValidator(env: NodeJS.ProcessEnv = process.env): Validator {
  const apiKey = env.ANTHROPIC_API_KEY?.trim();
  if (!apiKey) return new LocalValidator();
  const baseURL = env.ANTHROPIC_BASE_URL?.trim();
  const model = env.ANTHROPIC_MODEL?.trim();
  return new AnthropicValidator({
    apiKey,
    ...(baseURL ? { baseURL } : {}),
    // Always explicit, so that `env` rather than process.env decides the model.
    model: model || DEFAULT_ANTHROPIC_MODEL,
  });
}
