"""Parts of the learning core beside the 2018 modules: `learning.settings` (what ValueRL reads
from a config, once) and `learning.oracle` (the MuJoCo simulator as the world model).
"""
