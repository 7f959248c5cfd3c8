"""Parsing on a Ray cluster: Ray Data moves the pages, one engine actor per GPU plans for that GPU.

It calls parsing/ and engines/; nothing below it imports it. Importing this package imports no
ray: `parse_on_ray` does, when it runs (the `ray` extra).
"""

from mineru_fit.scale.job import ENGINES, RayJob
from mineru_fit.scale.run import RayParseResult, parse_on_ray, ray_tier

__all__ = ["ENGINES", "RayJob", "RayParseResult", "parse_on_ray", "ray_tier"]
