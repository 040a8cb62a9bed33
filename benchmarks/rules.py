"""The rules file of the benchmark chain (3 DCs, 200 stores), rendered from code.

Why rendered: 203 locations are tedious and error-prone by hand, and the workload
names its locations DC1..DC3 and S001..S200, so the file must match it exactly. The
committed ``rules_200_stores.toml`` is this function's output (a smoke test checks it).

    python -m benchmarks.rules > benchmarks/rules_200_stores.toml
"""

from __future__ import annotations

from pathlib import Path

from availability.retail_day import Workload

RULES_200_STORES = Path(__file__).resolve().parent / "rules_200_stores.toml"


def render_rules(dcs: int = 3, stores: int = 200) -> str:
    """Locations as the workload names them; every 3rd store ships web orders."""
    workload = Workload(dcs=dcs, stores=stores)
    lines = [
        "# Benchmark chain: 3 distribution centres and 200 stores (benchmarks/rules.py).",
        "# Channels as in examples/rules.toml: web pools DCs and ship-from-store stores,",
        "# two marketplaces pool DCs with shares, caps and buffers, pickup is per store.",
        "",
    ]
    for index, location in enumerate(workload.locations):
        if index < dcs:
            lines += [f"[locations.{location}]", 'type = "dc"', 'tags = ["ship"]',
                      "safety_stock = 2", ""]
            continue
        store = index - dcs
        tags = '["pickup", "ship-from-store"]' if store % 3 == 0 else '["pickup"]'
        lines += [f"[locations.{location}]", 'type = "store"', f"tags = {tags}",
                  f"safety_stock = {2 if store % 3 == 0 else 1}", ""]
    lines += [
        "# The two best sellers are held back harder everywhere, and more at DC1.",
        "[[safety_stock]]", 'sku = "SKU-000000"', "quantity = 5", "",
        "[[safety_stock]]", 'sku = "SKU-000000"', 'location = "DC1"', "quantity = 20", "",
        "[[safety_stock]]", 'sku = "SKU-000001"', "quantity = 3", "",
        "[channels.web]", 'location_types = ["dc"]', 'location_tags = ["ship-from-store"]',
        "buffer = 2", "include_in_transit = true", "",
        "[channels.amazon]", 'location_types = ["dc"]', "allocation = 0.6", "buffer = 5",
        "max_quantity = 200", "",
        "[channels.walmart]", 'locations = ["DC1", "DC2"]', "allocation = 0.3",
        "buffer = 3", "max_quantity = 100", "",
        "[channels.pickup]", 'location_tags = ["pickup"]', "per_location = true",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_rules(), end="")
