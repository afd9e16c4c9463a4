# frozen_string_literal: true

require 'tmpdir'
require_relative '../../scripts/lib/bosh_package'

module BoshTemplate
  RSpec.describe 'release layout' do
    UPSTREAM_JOBS = %w[iptables-logger netmon silk-cni silk-controller silk-daemon silk-datastore-syncer vxlan-policy-agent].freeze
    # Jobs upstream does not have: BBR of the silk database (docs/bbr.md).
    OWN_JOBS = %w[bbr-silkdb].freeze

    it 'ships every job upstream silk-release ships for Linux, and only ours besides' do
      expect(release.job_names).to eq((UPSTREAM_JOBS + OWN_JOBS).sort)
    end

    it 'names each job directory as its spec and lists every template file (and only existing ones)' do
      release.job_names.each do |name|
        job = release.job(name)
        expect(job.name).to eq(name)
        listed = job.spec['templates'].keys.sort
        expect(Dir.children(File.join(job.path, 'templates')).sort).to eq(listed), "#{name}: templates/ vs spec"
        expect(File).to exist(File.join(job.path, 'monit'))
      end
    end

    it 'puts executables under bin/ (BOSH makes only those executable)' do
      release.job_names.each do |name|
        release.job(name).spec['templates'].each do |src, dest|
          source = File.read(File.join(release.job(name).path, 'templates', src))
          expect(dest).to start_with('bin/'), "#{name}/#{src} has a shebang but renders to #{dest}" if source.start_with?('#!')
        end
      end
    end

    it 'refers only to packages the release has' do
      packages = Dir.children(File.join(RELEASE_DIR, 'packages'))
      release.job_names.each do |name|
        expect(release.job(name).spec['packages'] - packages).to eq([]), name
      end
      packages.each do |pkg|
        spec = BoshPackage.spec(RELEASE_DIR, pkg)
        expect(spec['name']).to eq(pkg)
        expect((spec['dependencies'] || []) - packages).to eq([])
        expect(File).to exist(File.join(RELEASE_DIR, 'packages', pkg, 'packaging'))
      end
    end

    it 'keeps the package names other releases and cf-deployment rely on' do
      packages = Dir.children(File.join(RELEASE_DIR, 'packages'))
      expect(packages).to include('silk-cni', 'silk-controller', 'silk-daemon', 'vxlan-policy-agent', 'silk-ctl-utils',
                                  'silk-healthchecker', 'netmon', 'iptables-logger', 'silk-datastore-syncer')
    end

    it 'ships every workspace crate and Cargo.lock with each Rust package, the vendored crates once' do
      rust = Dir.children(File.join(RELEASE_DIR, 'packages')).select do |pkg|
        (BoshPackage.spec(RELEASE_DIR, pkg)['dependencies'] || []).include?('rust-toolchain')
      end
      expect(rust).to include('silk-cni', 'silk-controller', 'silk-daemon', 'vxlan-policy-agent', 'silk-healthchecker')
      rust.each do |pkg|
        spec = BoshPackage.spec(RELEASE_DIR, pkg)
        expect(spec['dependencies']).to include('rust-vendor')
        expect(spec['files']).to include('Cargo.toml', 'Cargo.lock', 'crates/**/*')
        files = BoshPackage.files(RELEASE_DIR, pkg, '/nonexistent')
        expect(files.keys.grep(/\.tar\.(gz|xz)\z/)).to eq([]), "#{pkg} carries a blob of its own"
        crates = Dir.children(File.join(RELEASE_DIR, 'src', 'crates'))
                    .select { |c| File.exist?(File.join(RELEASE_DIR, 'src', 'crates', c, 'Cargo.toml')) }
        crates.each { |c| expect(files).to have_key("crates/#{c}/Cargo.toml"), "#{pkg} misses crate #{c}" }
        expect(files.keys.grep(%r{(\A|/)target/})).to eq([])
      end
      Dir.mktmpdir do |blobs|
        FileUtils.mkdir_p(File.join(blobs, 'rust-vendor'))
        FileUtils.touch(File.join(blobs, 'rust-vendor', 'cargo-vendor.tar.xz'))
        expect(BoshPackage.files(RELEASE_DIR, 'rust-vendor', blobs).keys).to eq(['rust-vendor/cargo-vendor.tar.xz'])
      end
    end

    it 'keeps compile-time packages off the VMs: no job lists rust-toolchain or rust-vendor' do
      release.job_names.each do |name|
        expect(release.job(name).spec['packages'] || []).not_to include('rust-toolchain', 'rust-vendor')
      end
    end

    it 'reports a files pattern that matches nothing, as create-release does' do
      expect { BoshPackage.files(RELEASE_DIR, 'rust-vendor', '/nonexistent') }
        .to raise_error(BoshPackage::MissingFiles, "Missing files for pattern 'rust-vendor/cargo-vendor.tar.xz'")
    end

    it 'has a final.yml naming the release silk and a blob index without committed blobs' do
      final = YAML.safe_load(File.read(File.join(RELEASE_DIR, 'config', 'final.yml')))
      expect(final['name']).to eq('silk')
      expect(final).not_to have_key('final_name')
      expect(YAML.safe_load(File.read(File.join(RELEASE_DIR, 'config', 'blobs.yml')))).to be_a(Hash)
      expect(Dir.exist?(File.join(RELEASE_DIR, 'blobs')) && !Dir.empty?(File.join(RELEASE_DIR, 'blobs')) &&
             system('git', '-C', RELEASE_DIR, 'ls-files', '--error-unmatch', 'blobs', out: File::NULL, err: File::NULL)).to be(false)
    end
  end
end
