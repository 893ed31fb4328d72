# Conan 2 recipe for mapdirect (header-only), in the shape of conan-center-index's
# header-only template.
#   conan create . -o "mapdirect/*:with_uring=True"
# Consumers: requires = "mapdirect/0.1.0"; CMakeDeps generates
# find_package(mapdirect) with mapdirect::mapdirect (the core headers only) and,
# with with_uring, mapdirect::uring; the package's aggregate of all components is
# mapdirect::all, so linking mapdirect::mapdirect never pulls liburing in.
# PkgConfigDeps generates mapdirect.pc (and mapdirect-uring.pc).
# with_tools builds and packages bin/mapdirect-info (a binary: the package is
# then per configuration, not header-only).
# In conan-center-index the sources come from conandata.yml (source() below);
# building from this checkout, exports_sources supplies them.
import os

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeToolchain, cmake_layout
from conan.tools.files import copy, get
from conan.tools.layout import basic_layout

required_conan_version = ">=2.0"


class MapdirectConan(ConanFile):
    name = "mapdirect"
    version = "0.1.0"
    license = "MIT"
    url = "https://github.com/conan-io/conan-center-index"
    homepage = "https://github.com/mapdirect/mapdirect"
    description = ("Durable in-place updates of mapped files on Linux, with the strongest guarantee "
                   "the kernel and file system give and a report of which (header-only C++17)")
    topics = ("mmap", "persistent-memory", "dax", "map-sync", "durability", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"with_uring": [True, False], "with_tools": [True, False]}
    default_options = {"with_uring": False, "with_tools": False}
    exports_sources = "include/*", "examples/mapdirect-info/*", "examples/common/*", "cmake/*", \
        "CMakeLists.txt", "LICENSE"
    no_copy_source = True

    def configure(self):
        if self.options.with_tools:
            self.package_type = "application"

    def layout(self):
        if self.options.with_tools:
            cmake_layout(self, src_folder=".")
        else:
            basic_layout(self, src_folder=".")

    def requirements(self):
        # Boost.Outcome appears in the public headers, hence transitive_headers.
        self.requires("boost/1.83.0", transitive_headers=True)
        if self.options.with_uring:
            self.requires("liburing/2.4", transitive_headers=True, transitive_libs=True)

    def package_id(self):
        # The same headers serve every configuration; a packaged tool does not.
        if not self.info.options.with_tools:
            self.info.clear()

    def validate(self):
        if self.settings.os != "Linux":
            raise ConanInvalidConfiguration(f"{self.ref} supports Linux only")
        if self.settings.get_safe("compiler.cppstd"):
            check_min_cppstd(self, 17)

    def source(self):
        if "sources" in (self.conan_data or {}):
            get(self, **self.conan_data["sources"][self.version], strip_root=True)

    def generate(self):
        if self.options.with_tools:
            tc = CMakeToolchain(self)
            tc.cache_variables["MAPDIRECT_BUILD_TESTS"] = False
            tc.cache_variables["MAPDIRECT_BUILD_EXAMPLES"] = False
            tc.cache_variables["MAPDIRECT_INSTALL_TOOLS"] = True
            tc.cache_variables["MAPDIRECT_WITH_URING"] = "ON" if self.options.with_uring else "OFF"
            tc.generate()

    def build(self):
        if self.options.with_tools:
            cmake = CMake(self)
            cmake.configure()
            cmake.build(target="mapdirect-info")

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "*.hpp", os.path.join(self.source_folder, "include"),
             os.path.join(self.package_folder, "include"))
        if self.options.with_tools:
            copy(self, "mapdirect-info", self.build_folder, os.path.join(self.package_folder, "bin"),
                 keep_path=False)

    def package_info(self):
        self.cpp_info.bindirs = ["bin"] if self.options.with_tools else []
        self.cpp_info.libdirs = []
        self.cpp_info.set_property("cmake_file_name", "mapdirect")
        # A global target distinct from the core component's: CMakeDeps' aggregate
        # of all components must not take the name mapdirect::mapdirect.
        self.cpp_info.set_property("cmake_target_name", "mapdirect::all")
        self.cpp_info.set_property("pkg_config_name", "mapdirect-all")

        core = self.cpp_info.components["core"]
        core.set_property("cmake_target_name", "mapdirect::mapdirect")
        core.set_property("pkg_config_name", "mapdirect")
        core.bindirs = []
        core.libdirs = []
        core.requires = ["boost::headers"]

        if self.options.with_uring:
            uring = self.cpp_info.components["uring"]
            uring.set_property("cmake_target_name", "mapdirect::uring")
            uring.set_property("pkg_config_name", "mapdirect-uring")
            uring.bindirs = []
            uring.libdirs = []
            uring.requires = ["core", "liburing::liburing"]
            uring.system_libs = ["pthread"]
