from wit_world import exports
from wit_world.imports import types
class Plugin(exports.Plugin):
    def metadata(self):
        return types.PluginMetadata("minimal-python", "0.1.0", 1, False, True)
    def configure(self, config): pass
    def save_state(self): return b""
    def load_state(self, state_version, state): pass
class Responses(exports.Responses):
    def decide(self, input):
        if input.analytics.overall.error_rate <= 0.5: return []
        return [types.ActionRequest("minimal", "page_oncall", "team", "{}", "")]
