// Config checks shared by the plugin's modules. componentize-js bundles the
// modules app.js imports.

// The config section as an object; a thrown string is the error configure
// returns (the host reports it and keeps the previous config).
export function configObject(text) {
  let config;
  try {
    config = JSON.parse(text);
  } catch {
    config = undefined;
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw 'config must be a JSON object';
  }
  return config;
}

// The bound is the WIT's u32.
export function positiveInt(config, key, fallback) {
  const value = Object.hasOwn(config, key) ? config[key] : fallback;
  if (!(Number.isInteger(value) && value > 0 && value <= 0xffffffff)) {
    throw `${key} must be a positive integer`;
  }
  return value;
}

export function number(config, key, fallback) {
  const value = Object.hasOwn(config, key) ? config[key] : fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw `${key} must be a number`;
  }
  return value;
}
