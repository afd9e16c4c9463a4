# frozen_string_literal: true

require_relative '../support/ops_file'

RSpec.describe OpsFile do
  let(:doc) do
    { 'releases' => [{ 'name' => 'silk', 'version' => '1' }, { 'name' => 'bpm' }],
      'instance_groups' => [{ 'name' => 'cell', 'jobs' => [{ 'name' => 'silk-cni', 'properties' => { 'a' => 1 } }] }] }
  end

  def apply(ops)
    OpsFile.apply_all(OpsFile.deep_copy(doc), ops)
  end

  it 'replaces an array element selected by name' do
    out = apply([{ 'type' => 'replace', 'path' => '/releases/name=silk', 'value' => { 'name' => 'silk', 'version' => 'create' } }])
    expect(out['releases'][0]).to eq('name' => 'silk', 'version' => 'create')
  end

  it 'creates optional keys and everything to their right' do
    out = apply([{ 'type' => 'replace', 'path' => '/instance_groups/name=cell/jobs/name=silk-cni/properties/ipv6?/enable', 'value' => true }])
    expect(out['instance_groups'][0]['jobs'][0]['properties']).to eq('a' => 1, 'ipv6' => { 'enable' => true })
  end

  it 'appends with - and creates a missing element with name=value?' do
    out = apply([{ 'type' => 'replace', 'path' => '/releases/-', 'value' => { 'name' => 'x' } },
                 { 'type' => 'replace', 'path' => '/instance_groups/name=cell/jobs/name=netmon?/release', 'value' => 'silk' }])
    expect(out['releases'].last).to eq('name' => 'x')
    expect(out['instance_groups'][0]['jobs'].last).to eq('name' => 'netmon', 'release' => 'silk')
  end

  it 'inserts before and after an index, and indexes from the end' do
    out = apply([{ 'type' => 'replace', 'path' => '/releases/0:before', 'value' => { 'name' => 'first' } },
                 { 'type' => 'replace', 'path' => '/releases/-1:after', 'value' => { 'name' => 'last' } }])
    expect(out['releases'].map { |r| r['name'] }).to eq(%w[first silk bpm last])
  end

  it 'removes keys and elements, ignoring missing optional ones' do
    out = apply([{ 'type' => 'remove', 'path' => '/releases/name=bpm' },
                 { 'type' => 'remove', 'path' => '/instance_groups/name=cell/jobs/name=silk-cni/properties/a' },
                 { 'type' => 'remove', 'path' => '/instance_groups/name=cell/jobs/name=netmon?' }])
    expect(out['releases'].map { |r| r['name'] }).to eq(%w[silk])
    expect(out['instance_groups'][0]['jobs'][0]['properties']).to eq({})
  end

  it 'unescapes ~1 and ~0 in keys' do
    out = apply([{ 'type' => 'replace', 'path' => '/a~1b?', 'value' => 1 }, { 'type' => 'replace', 'path' => '/c~0d?', 'value' => 2 }])
    expect(out).to include('a/b' => 1, 'c~d' => 2)
  end

  it 'fails on missing required keys and elements, naming the operation' do
    expect { apply([{ 'type' => 'replace', 'path' => '/nope/x', 'value' => 1 }]) }
      .to raise_error(OpsFile::Error, "operation [0] replace /nope/x: expected to find a map key 'nope'")
    expect { apply([{ 'type' => 'remove', 'path' => '/releases/name=pxc' }]) }
      .to raise_error(OpsFile::Error, 'operation [0] remove /releases/name=pxc: found no items matching name=pxc')
    expect { apply([{ 'type' => 'replace', 'path' => '/releases/5', 'value' => 1 }]) }
      .to raise_error(OpsFile::Error, /expected index 5 to be within array bounds/)
  end

  it 'does not let a later change leak through YAML aliases' do
    shared = { 'k' => 1 }
    out = OpsFile.apply_all(OpsFile.deep_copy('a' => shared, 'b' => shared), [{ 'type' => 'replace', 'path' => '/a/k', 'value' => 2 }])
    expect(out).to eq('a' => { 'k' => 2 }, 'b' => { 'k' => 1 })
  end
end
