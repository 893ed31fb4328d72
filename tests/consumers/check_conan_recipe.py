#!/usr/bin/env python3
"""Runs conanfile.py against a small model of the Conan 2 API (Conan itself is
not installable here) and checks what CMakeDeps would generate from it:

- the core component's target is mapdirect::mapdirect and no other target
  (the package's aggregate included) has that name, with and without uring;
- mapdirect::uring requires the core and liburing only when with_uring;
- requirements are pinned versions (Conan Center accepts no ranges);
- the Conan Center fields (url, homepage, license, package_type), layout(),
  and test_package/ (conanfile.py with test_type explicit, CMakeLists.txt
  linking mapdirect::mapdirect only) are present.
Exits 1 with every failure listed."""
import importlib.util
import os
import sys
import types

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)


# --- the model of the Conan API the recipe imports --------------------------
class Options(dict):
    def __getattr__(self, k):
        return self[k]


class CppInfo:
    def __init__(self):
        self.properties = {}
        self.components = Components()
        self.requires = []
        self.system_libs = []
        self.bindirs = ["bin"]
        self.libdirs = ["lib"]

    def set_property(self, k, v):
        self.properties[k] = v

    def get_property(self, k):
        return self.properties.get(k)


class Components(dict):
    def __missing__(self, k):
        self[k] = CppInfo()
        return self[k]


class Settings(dict):
    def __getattr__(self, k):
        return self[k]

    def get_safe(self, k):
        return self.get(k)


class ConanFile:
    def __init__(self, options):
        self.options = Options(options)
        self.settings = Settings(os="Linux", arch="x86_64")
        self.cpp_info = CppInfo()
        self.requirements_seen = []
        self.conan_data = None

    def requires(self, ref, **kw):
        self.requirements_seen.append((ref, kw))


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


stub("conan", ConanFile=ConanFile)
stub("conan.errors", ConanInvalidConfiguration=type("ConanInvalidConfiguration", (Exception,), {}))
stub("conan.tools")
stub("conan.tools.build", check_min_cppstd=lambda *a: None, can_run=lambda *a: True)
stub("conan.tools.cmake", CMake=object, CMakeToolchain=object, cmake_layout=lambda *a, **k: None)
stub("conan.tools.files", copy=lambda *a, **k: None, get=lambda *a, **k: None)
stub("conan.tools.layout", basic_layout=lambda *a, **k: None)

spec = importlib.util.spec_from_file_location("recipe", os.path.join(src, "conanfile.py"))
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)
Recipe = recipe.MapdirectConan


def cmakedeps_targets(r):
    """Target names CMakeDeps would create: the package's global target and
    one per component, with the requirements of each."""
    name = Recipe.name
    glob = r.cpp_info.get_property("cmake_target_name") or f"{name}::{name}"
    comps = {}
    for cname, c in r.cpp_info.components.items():
        comps[c.get_property("cmake_target_name") or f"{name}::{cname}"] = c
    return glob, comps


for with_uring in (False, True):
    r = Recipe({"with_uring": with_uring, "with_tools": False})
    r.requirements()
    r.validate()
    r.package_info()
    glob, comps = cmakedeps_targets(r)
    tag = f"with_uring={with_uring}"
    check("mapdirect::mapdirect" in comps, f"{tag}: a component is mapdirect::mapdirect")
    check(glob != "mapdirect::mapdirect", f"{tag}: the aggregate target ({glob}) is not mapdirect::mapdirect")
    core = comps.get("mapdirect::mapdirect")
    if core is not None:
        check(core.requires == ["boost::headers"], f"{tag}: mapdirect::mapdirect requires only boost::headers")
        check(not core.system_libs, f"{tag}: mapdirect::mapdirect links no system library")
    if with_uring:
        u = comps.get("mapdirect::uring")
        check(u is not None and "liburing::liburing" in u.requires and "core" in u.requires,
              f"{tag}: mapdirect::uring requires core and liburing")
    else:
        check("mapdirect::uring" not in comps, f"{tag}: no mapdirect::uring")
    for ref, kw in r.requirements_seen:
        check("[" not in ref and "/" in ref, f"{tag}: requirement {ref} is a pinned version")
    check(any(ref.startswith("boost/") and kw.get("transitive_headers") for ref, kw in r.requirements_seen),
          f"{tag}: boost is a transitive-headers requirement")

for field in ("url", "homepage", "license", "description", "topics", "package_type"):
    check(bool(getattr(Recipe, field, None)), f"recipe has {field}")
check(Recipe.package_type == "header-library", "package_type is header-library by default")
check(callable(getattr(Recipe, "layout", None)), "recipe has layout()")
check("with_tools" in Recipe.options, "recipe has a with_tools option (bin/mapdirect-info)")
tp = os.path.join(src, "test_package")
check(os.path.isfile(os.path.join(tp, "conanfile.py")), "test_package/conanfile.py exists")
if os.path.isfile(os.path.join(tp, "conanfile.py")):
    text = open(os.path.join(tp, "conanfile.py")).read()
    check('test_type = "explicit"' in text and "tested_reference_str" in text,
          "test_package requires tested_reference_str with test_type explicit")
cm = os.path.join(tp, "CMakeLists.txt")
check(os.path.isfile(cm) and "mapdirect::mapdirect" in open(cm).read() and "mapdirect::uring" not in open(cm).read(),
      "test_package links mapdirect::mapdirect only")

print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
